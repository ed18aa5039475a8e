"""Queries and workflows on imported models: active models and their settings and
mode, importing a Training Service model, the status overview, library versions.

May use `storage.db`, `storage.model_files`, `storage.clients`, the top level of
`storage` and `features`.
"""
