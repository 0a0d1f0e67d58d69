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


class CurvePointSchema(Schema):
    frames = fields.Integer(metadata={"description": "cache size in 4 KiB pages"})
    mb = fields.Float(metadata={"description": "the same size in MB"})
    miss_ratio = fields.Float(metadata={"description": "LRU misses / references at this size, first references included"})


class WorkingSetSchema(Schema):
    share = fields.String(metadata={"description": "90%, 95% or 99%"})
    pages = fields.Integer(metadata={"description": "smallest LRU cache that gets this share of the hits an unbounded cache gets"})
    mb = fields.Float()


class ReuseBucketSchema(Schema):
    min = fields.Integer(allow_none=True, metadata={"description": "smallest stack distance in the bucket; null for first references"})
    max = fields.Integer(allow_none=True, metadata={"description": "largest stack distance in the bucket; null for first references"})
    references = fields.Integer()
    cold = fields.Boolean(metadata={"description": "present and true on the bucket of first references"})


class TraceAnalysisSchema(Schema):
    version = fields.Integer(metadata={"description": "version of this record's layout"})
    method = fields.String(metadata={"description": "exact (every reference's stack distance) or shards (spatially "
                                                    "hashed sample, for traces above the size limit; see docs/traces.md)"})
    sampling_rate = fields.Float(allow_none=True, metadata={"description": "SHARDS rate; null when exact"})
    resolution_pages = fields.Integer(metadata={
        "description": "the curve is resolved from this many pages up: a sampled curve cannot tell smaller sizes "
                       "apart (about 1/sampling_rate); 1 when exact"})
    references = fields.Integer()
    footprint_pages = fields.Integer()
    cold_misses = fields.Integer(metadata={"description": "first references: misses at every size"})
    curve = fields.List(fields.Nested(CurvePointSchema), metadata={
        "description": "the LRU miss-ratio curve at up to 256 sizes from 1 page to the footprint, ascending"})
    working_set = fields.List(fields.Nested(WorkingSetSchema))
    reuse_histogram = fields.List(fields.Nested(ReuseBucketSchema), metadata={
        "description": "stack distances in power-of-two buckets [2^k, 2^(k+1)), then the first references"})


class TraceDetailSchema(TraceSchema):
    analysis = fields.Nested(TraceAnalysisSchema, allow_none=True, metadata={
        "description": "computed at upload; null for a trace stored before the analysis existed (upload it again)"})


class TraceQuerySchema(QuerySchema):
    name = fields.String()
    sha256 = fields.String(validate=validate.Length(equal=64))


class TraceUploadQuerySchema(QuerySchema):
    name = fields.String(validate=validate.Length(min=1, max=200),
                         metadata={"description": "name of the trace; default: the uploaded file's name"})
