"""The API's route handlers, one module per resource.

May use the rest of `web`, `storage` and what `AppContext` carries.
"""
