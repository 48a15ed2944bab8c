"""Labelled images on disk: layouts and splits, the scan of every file, reading, preprocessing specs and caches.

Nothing here knows of training: no fastai.
"""
from __future__ import annotations

from petclf.core.lazy import lazy_exports

_EXPORTS = {
    "CacheUsage": "petclf.data.cachedir",
    "cache_usage": "petclf.data.cachedir",
    "clear_cache": "petclf.data.cachedir",
    "prepare_caltech10": "petclf.data.caltech",
    "write_digits": "petclf.data.digits",
    "PresizedImages": "petclf.data.imagecache",
    "Presizer": "petclf.data.images",
    "read_rgb": "petclf.data.images",
    "DEFAULT_LABEL_PAT": "petclf.data.label_pattern",
    "LabelledImages": "petclf.data.dataset",
    "IMAGE_EXTENSIONS": "petclf.data.images",
    "detect_layout": "petclf.data.detection",
    "find_dataset": "petclf.data.layouts",
    "keep_split": "petclf.data.saved_split",
    "split_record": "petclf.data.saved_split",
    "Pipeline": "petclf.data.pipeline",
    "make_pipeline": "petclf.data.pipeline",
    "FileCheck": "petclf.data.scan",
    "ScanReport": "petclf.data.scan",
    "check_dataset": "petclf.data.checks",
    "check_file": "petclf.data.scan",
    "check_folder": "petclf.data.scan",
    "class_table": "petclf.data.scan",
    "TableFormat": "petclf.data.table",
    "read_table": "petclf.data.table",
    "scan_dataset": "petclf.data.scan",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
