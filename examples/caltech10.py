"""Caltech-10 transfer learning, as the PyTorch tutorial does it, with petclf.

Ten animal classes of Caltech-256 (bear, chimp, giraffe, gorilla, llama, ostrich, porcupine, skunk,
triceratops, zebra): 60 training and 10 validation images per class, the rest for testing
(600/100/409 files). ResNet50 transfer learning, test-set accuracy, and the top-3 prediction for
one image.

Usage:
    petclf prepare-caltech10 PATH/caltech256 data/caltech10     # once, from the Caltech-256 download
    python examples/caltech10.py --data data/caltech10 [--weights resnet50-11ad3fa6.pth]
    python examples/caltech10.py --smoke                          # seconds, offline, generated data
"""
from __future__ import annotations

import argparse
from pathlib import Path

from petclf import Predictor, TrainOptions, train_folder
from petclf.data.caltech import prepare_caltech10


def main() -> None:
    parser = argparse.ArgumentParser(description="Caltech-10 with petclf")
    parser.add_argument("--data", default="data/caltech10", help="folder with train/, valid/ and test/")
    parser.add_argument("--out", default="runs/caltech10")
    parser.add_argument("--weights", default=None, help="local ImageNet weights for resnet50 (offline)")
    parser.add_argument("--smoke", action="store_true", help="a few seconds on generated data")
    args = parser.parse_args()

    if args.smoke:
        from _smoke import caltech256_like, work_dir

        work = work_dir("caltech10")
        data, out = work / "caltech10", work / "run"
        print(prepare_caltech10(caltech256_like(work / "caltech256"), data))
        options = TrainOptions(arch="resnet50", size=32, bs=32, epochs=1, freeze_epochs=1, lr=1e-3, pretrained=False)
    else:
        data, out = Path(args.data), Path(args.out)
        options = TrainOptions(arch="resnet50", size=224, bs=32, epochs=3, freeze_epochs=2, weights=args.weights)

    run = train_folder(data, out=out, options=options)
    s = run.summary
    print(f"validation accuracy {s['accuracy']:.2%}, test accuracy {s['test_accuracy']:.2%} on {s['n_test']} images")
    image = next((data / "test").rglob("*.jpg"))
    top3 = Predictor(run.model_dir).predict(image, topk=3)
    print(f"{image.parent.name}/{image.name}: " + ", ".join(f"{label} {p:.1%}" for label, p in top3))


if __name__ == "__main__":
    main()
