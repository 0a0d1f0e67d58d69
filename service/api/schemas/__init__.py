"""marshmallow schemas of the API, one module per resource: query strings, request bodies and
responses are separate schemas. Unknown fields are refused everywhere (marshmallow's default)."""
