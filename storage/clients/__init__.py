"""Clients of other services: the Training Service HTTP API.

May use `storage.model_files` (downloads land there) and the top level of `storage`.
"""
