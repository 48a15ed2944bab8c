"""What every part of petclf uses: errors, defaults, the logger, safe text and safe writes."""
from __future__ import annotations

from petclf.core.lazy import lazy_exports

_EXPORTS = {
    "atomic_path": "petclf.core.atomic",
    "write_json_atomic": "petclf.core.atomic",
    "output_dir": "petclf.core.destinations",
    "output_file": "petclf.core.destinations",
    "DataError": "petclf.core.errors",
    "ModelFileError": "petclf.core.errors",
    "PetclfError": "petclf.core.errors",
    "TrainingDiverged": "petclf.core.errors",
    "UsageError": "petclf.core.errors",
    "WeightsUnavailableError": "petclf.core.errors",
    "TrainOptions": "petclf.core.options",
    "is_main": "petclf.core.processes",
    "world_size": "petclf.core.processes",
    "csv_cell": "petclf.core.safe_text",
    "csv_safe": "petclf.core.safe_text",
    "printable": "petclf.core.safe_text",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
