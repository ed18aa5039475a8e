"""The HTTP edge: the aiohttp app, errors, auth, request checks, OpenAPI, the status page
template and the Streamlit dashboard (which talks to the REST API only).

May use `storage` and what `AppContext` carries; never imported by `storage`.
"""
