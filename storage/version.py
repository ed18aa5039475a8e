"""The service's version: reported by /health, the OpenAPI document and every webhook
payload, so it lives at the lowest layer where all of them can read it."""

VERSION = "0.1.0"
