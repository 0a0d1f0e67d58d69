"""Uploaded page-reference traces."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from ..common import QuerySchema


class TraceSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    sha256 = fields.String()
    format = fields.String(metadata={"description": "text, gzip or npy"})
    size_bytes = fields.Integer()
    length = fields.Integer(metadata={"description": "number of references"})
    footprint_pages = fields.Integer(metadata={"description": "distinct pages referenced"})
    footprint_mb = fields.Float()
    ref_count = fields.Integer(metadata={"description": "experiments using the trace"})
    created_at = fields.DateTime()


class TraceQuerySchema(QuerySchema):
    name = fields.String()
    sha256 = fields.String(validate=validate.Length(equal=64))


class TraceUploadQuerySchema(QuerySchema):
    name = fields.String(validate=validate.Length(min=1, max=200),
                         metadata={"description": "name of the trace; default: the uploaded file's name"})
