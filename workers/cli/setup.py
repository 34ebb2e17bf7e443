"""`arena setup-model` and `setup-default`: the embedded models and the default predictor in SHARED_DIR."""

from __future__ import annotations

import sys
from pathlib import Path

from workers.cli.progress import stage_bars


def command_setup_model(args, settings) -> dict:
    from workers.judge.model_setup import convert_embedded_model
    from workers.predictor.sentence_encoder import install_text_encoder

    path = convert_embedded_model(settings.default_model_dir, force=args.force)
    try:
        encoder = str(install_text_encoder(settings.default_text_encoder_dir, force=args.force))
    except FileNotFoundError as exc:  # e.g. a GPU image without the MiniLM wheel: train with --no-text-model
        encoder = f"not installed: {exc}"
    return {"model": str(path), "text_encoder": encoder}


def command_setup_default(args, settings) -> dict:
    """Fit the default predictor on DEFAULT_TRAIN_CSV unless the one there is current (same CSV, loadable)."""
    from workers.predictor.sentence_encoder import default_device, resolve_backend
    from workers.training.text_predictor import fit_text_predictor, text_predictor_is_current

    inputs = [Path(args.input or settings.DEFAULT_TRAIN_CSV)]
    if not inputs[0].is_file() and args.skip_missing:
        print(
            f"setup-default: {inputs[0]} not found, no default predictor fitted: plain predict requests are refused"
            " until one exists (set DEFAULT_TRAIN_CSV to a labelled arena CSV and run `arena setup-default`)",
            file=sys.stderr,
        )
        return {"output_dir": str(settings.default_predictor_dir), "fitted": False, "reason": "no DEFAULT_TRAIN_CSV"}
    if not inputs[0].is_file():
        raise FileNotFoundError(
            f"{inputs[0]} not found: set DEFAULT_TRAIN_CSV (or --input) to a labelled arena CSV to fit the default"
            " predictor on"
        )
    output_dir = settings.default_predictor_dir
    backend = resolve_backend(settings.TEXT_ENCODER_BACKEND, args.device or default_device())
    if not args.force and text_predictor_is_current(output_dir, inputs=inputs, encoder_backend=backend):
        return {"output_dir": str(output_dir), "fitted": False, "reason": "current (same CSV, this version)"}
    metrics = fit_text_predictor(
        inputs=inputs,
        output_dir=output_dir,
        text_encoder=settings.text_encoder_path,
        seed=0,
        device=args.device,
        on_stage=stage_bars("default predictor: "),
    )
    return {"output_dir": str(output_dir), "fitted": True, **metrics}


def add_setup_model(commands) -> None:
    setup_model = commands.add_parser("setup-model", help="convert the embedded SmolLM2-135M into SHARED_DIR/models")
    setup_model.add_argument("--force", action="store_true")
    setup_model.set_defaults(handler=command_setup_model)

    setup_default = commands.add_parser(
        "setup-default",
        help="fit the default predictor (a calibrated text model) on DEFAULT_TRAIN_CSV into SHARED_DIR/models/"
        "DEFAULT_PREDICTOR, unless the one there is current",
    )
    setup_default.add_argument("--input", type=Path, help="labelled CSV (default: DEFAULT_TRAIN_CSV)")
    setup_default.add_argument("--device", help="encoder device: cpu, cuda (default: CUDA when visible)")
    setup_default.add_argument("--force", action="store_true", help="refit even when the predictor is current")
    setup_default.add_argument(
        "--skip-missing", action="store_true", help="warn and exit 0 when the CSV is missing (what set-up does)"
    )
    setup_default.set_defaults(handler=command_setup_default)
