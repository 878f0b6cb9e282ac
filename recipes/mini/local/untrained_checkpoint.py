#!/usr/bin/env python3
"""Write the encoder of CONFIG, freshly initialised with the config's seed, as a checkpoint.

The "untrained encoder" row of the mini results table: the same architecture and front-end as the
trained model, so the table shows what training (not the architecture alone) buys.

    python local/untrained_checkpoint.py conf/xvector_mini.yaml exp/xvector_mini/untrained.pt
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="experiment YAML")
    parser.add_argument("out", help="checkpoint to write")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    args = parser.parse_args(argv)

    import torch

    from speakerverify.checkpoint import save_checkpoint
    from speakerverify.config import ConfigError
    from speakerverify.models import build_model
    from speakerverify.training.experiment_config import load_config
    from speakerverify.training.setup import build_model_args

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    torch.manual_seed(config.train.seed)
    model_args = build_model_args(config)
    model = build_model(config.model.name, **model_args).eval()
    fingerprint = save_checkpoint(
        args.out,
        model_name=config.model.name,
        model_args=model_args,
        model=model,
        features=config.features.fbank_dict(),
        config=config.to_dict(),
    )
    print(f"untrained {config.model.name} ({fingerprint}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
