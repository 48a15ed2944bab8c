"""Defaults and choice lists shared by the library, ``TrainOptions``, the model-file checks and the command
line: each is set here only."""
from __future__ import annotations

__all__ = ["DEFAULT_LR", "ARCH_SOURCES", "AUGMENTS", "BALANCES", "DEFAULT_BALANCE", "MULTI_LABEL", "SINGLE_LABEL", "TASKS",
           "THRESHOLD_MODES", "DEFAULT_SEED", "DEFAULT_VALID_PCT", "IMAGENET_STATS", "LAYOUTS", "MAX_LR", "MAX_SEED",
           "MAX_SIZE", "MIN_SIZE", "PRECISIONS", "MAX_CLASSES", "MAX_CLASS_NAME_CHARS",
           "DEFAULT_OOD_SCORE", "DEFAULT_KNN_K", "DEFAULT_UNKNOWN_ACCEPT", "MIN_UNKNOWN_ACCEPT", "ECE_BINS",
           "ECE_CHANCE_DRAWS", "OOD_FIT_IMAGES",
           "BACKENDS", "DEFAULT_MAX_INT8_DROP", "DEFAULT_CALIB_IMAGES",
           "DEFAULT_THRESHOLD", "QUANTIZERS", "DEFAULT_QUANTIZER"]

#: Where an architecture comes from: torchvision's or timm's names, ``register_arch``, or the user's own object.
ARCH_SOURCES = ("torchvision", "timm", "registered", "custom")
#: Layouts petclf reads: three of folders, one of a table file ('auto' detects one).
LAYOUTS = ("auto", "pets", "folders", "classes", "csv")
#: Tasks: one label per image (softmax over classes) or any number of labels (a sigmoid per label).
SINGLE_LABEL, MULTI_LABEL = "single_label", "multi_label"
TASKS = (SINGLE_LABEL, MULTI_LABEL)
#: Countering skewed classes: a class-balanced sampler of training images, or class weights in the loss.
BALANCES = ("none", "sampler", "weights")
DEFAULT_BALANCE = "weights"
#: Multi-label decision thresholds: one chosen on the validation set ('auto'), one per label ('per-label'),
#: or a number given by the user.
THRESHOLD_MODES = ("auto", "per-label")

#: Batch augmentation: flips are wrong for text and digits ('no-flip'); 'none' for a plain baseline.
AUGMENTS = ("standard", "no-flip", "none")
#: Numeric precision of training and prediction; 'auto' picks bf16/fp16 where the hardware computes it.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Per-channel mean and std of ImageNet photos, which torchvision's and most timm bodies expect.
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

#: Share of images held out for validation when the data has no valid/ folder.
DEFAULT_VALID_PCT = 0.2
#: Fixes the random split and the initial weights.
DEFAULT_SEED = 42

#: Image sides a model is trained at, in pixels: below 8 no network sees anything, and at 2048 one
#: batch of 64 already takes 3 GB of floats.
MIN_SIZE, MAX_SIZE = 8, 2048
#: Seeds numpy and torch accept.
MAX_SEED = 2**32 - 1
#: The learning rate when none is given (from scratch; for a pretrained body it is fine_tune's base rate, as
#: fastai's own default): best of 1e-3, 2e-3, 3e-3 and lr_find's suggestion on the digit benchmarks
#: (BENCHMARKS.md, 2026-12-02 "learning-rate choice"). lr_find runs only when asked for (``--lr-find``):
#: it costs as much as a short training.
DEFAULT_LR = 2e-3
#: No optimizer petclf uses trains at a learning rate above this; larger ones only make the loss NaN.
MAX_LR = 10.0

#: The widest head a model file may declare (read by the model-file checks, and by the table reader so that
#: no training ends in a model that cannot be loaded): 100,000 classes is already a 200 MB last layer
#: behind fastai's 512-wide head.
MAX_CLASSES = 100_000
#: The longest class name, in characters, for the same two readers: class names come from folder and file
#: names (255 bytes on common file systems) or from table cells.
MAX_CLASS_NAME_CHARS = 1024

#: The out-of-distribution score behind a model's 'unknown' answer (one of petclf.runtime.ood.OOD_KINDS), and the
#: neighbours its knn score averages over. On flowers5 (BENCHMARKS.md, 2026-12-07 "trust") knn on the body's pooled
#: features is the only score with far-OOD AUROC ≥ 0.98 and FPR@95 ≤ 10% on every far set (≥ 0.998, 0%); msp and
#: energy stay under 0.74, Mahalanobis fails on digits. k = 5, 10, 20 tie there; 10 is also cleanlab's default.
DEFAULT_OOD_SCORE = "knn"
DEFAULT_KNN_K = 10
#: Share of in-distribution (validation) images whose OOD score stays under the "unknown" threshold: 0.95 means
#: 5% of ordinary images are flagged unknown, the usual operating point (FPR at 95% TPR) of the OOD literature.
DEFAULT_UNKNOWN_ACCEPT = 0.95
#: The lowest acceptance a model stores a threshold for (its curve runs from here to 1) and so the lowest one
#: training, `predict` and `serve` take: below it more ordinary images would be flagged than kept.
MIN_UNKNOWN_ACCEPT = 0.5
#: Equal-width confidence bins of the expected calibration error and the reliability diagram (the usual 15).
ECE_BINS = 15
#: Simulated label draws behind ``ece_by_chance``; its 95th percentile moved by about 0.001 between seeds (864 images).
ECE_CHANCE_DRAWS = 400
#: Training images (a random sample when there are more) the OOD score is fitted on after training: enough for
#: feature statistics, and a bounded extra pass in a time budget.
OOD_FIT_IMAGES = 5000
#: Where a saved model's forward pass runs: PyTorch, or its exported ONNX graph in ONNX Runtime or OpenVINO.
BACKENDS = ("torch", "onnxruntime", "openvino")
#: `petclf export --int8` refuses a graph whose validation top-1 falls more than this many points below fp32's
#: (OpenVINO publishes 0.2-point drops for ResNet-50; a silent multi-point loss is the known trap of int8 exports).
DEFAULT_MAX_INT8_DROP = 1.0
#: Training images that calibrate int8 activation ranges (ONNX Runtime and NNCF both suggest a few hundred).
DEFAULT_CALIB_IMAGES = 300
#: A multi-label model's decision threshold when it carries none.
DEFAULT_THRESHOLD = 0.5
#: Who quantizes for `petclf export --int8`. NNCF stayed closer to fp32 on flowers5 (BENCHMARKS.md 2026-12-07):
#: tf_efficientnet_lite0 lost 0.58 / 0.81 top-1 points in ONNX Runtime / OpenVINO against 0.69 / 1.15 for ONNX
#: Runtime's quantize_static, and resnet34's top class agreed with fp32 on 97.8% / 97.1% of photos against 95.3% / 94.1%.
QUANTIZERS = ("nncf", "onnxruntime")
DEFAULT_QUANTIZER = "nncf"
