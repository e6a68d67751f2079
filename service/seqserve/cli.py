"""The `seqserve` command: export Keras files into the store, and serve the store."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from seqserve.errors import InvalidInput, SeqserveError


def _export(args: argparse.Namespace) -> int:
    from seqserve.export import export_model

    report = export_model(
        args.src,
        name=args.name,
        store=args.store,
        version=args.version,
        stateful=args.stateful,
        target=args.target,
        progress=not args.quiet,
        weights=args.weights,
    )
    print(report.summary())
    return 0


# Settings may also be files, one per setting, named like its variable (`seqserve_sessions`): how a
# Kubernetes Secret is best handed over (mounted, not in the environment).
SECRETS_DIR = "/run/secrets/seqserve"


def _serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from seqserve.auth import KeyFileError
    from seqserve.config import Settings, explain
    from seqserve.server import serve

    # Flags given on the command line win over SEQSERVE_* variables, which win over files in the
    # secrets directory, which win over defaults.
    overrides = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    secrets = os.environ.get("SEQSERVE_SECRETS_DIR") or (SECRETS_DIR if os.path.isdir(SECRETS_DIR) else None)
    try:
        settings = Settings(**overrides, _secrets_dir=secrets)
    except ValidationError as e:
        problems = explain(e, Settings.model_fields, label=lambda name: f"SEQSERVE_{name.upper()}")
        raise InvalidInput(f"invalid settings: {problems}") from None
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(settings))
    except KeyFileError as e:  # read once at start; later changes that break it are logged, not fatal
        raise InvalidInput(str(e)) from None
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    export = commands.add_parser("export", help="export a .keras or .h5 file into the model store")
    export.add_argument(
        "src", type=Path, help="Keras model file (.keras, or legacy .h5), or a tf.keras SavedModel directory"
    )
    export.add_argument("--name", required=True, help="model name in the store")
    export.add_argument(
        "--weights", type=Path, default=None, help="save_weights .h5 of a .json/.yaml architecture (Keras 0.3, 1, 2)"
    )
    export.add_argument("--store", type=Path, default=Path("model_store"), help="model store directory")
    export.add_argument("--version", type=int, default=None, help="version number (default: next free)")
    export.add_argument(
        "--stateful",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="carry state between requests of a sequence (default: as the Keras layers say)",
    )
    export.add_argument("--target", choices=["cpu", "cuda"], default="cpu", help="execution provider to export for")
    export.add_argument("--quiet", action="store_true", help="no progress bars")
    export.set_defaults(run=_export)

    serve = commands.add_parser("serve", help="serve the model store over KServe V2 REST and gRPC")
    serve.add_argument("--store", type=Path, help="model store directory [SEQSERVE_STORE, model_store]")
    serve.add_argument("--host", help="bind address [SEQSERVE_HOST, 127.0.0.1; the container image sets 0.0.0.0]")
    serve.add_argument("--http-port", dest="http_port", type=int, help="REST port [SEQSERVE_HTTP_PORT, 8000]")
    serve.add_argument("--grpc-port", dest="grpc_port", type=int, help="gRPC port [SEQSERVE_GRPC_PORT, 8001]")
    serve.add_argument("--device", choices=["auto", "cpu", "cuda"], help="execution provider [SEQSERVE_DEVICE, auto]")
    serve.add_argument(
        "--sessions", help="session state store: memory or redis://host:port/db [SEQSERVE_SESSIONS, memory]"
    )
    serve.add_argument(
        "--max-sequence-idle",
        dest="max_sequence_idle",
        type=float,
        help="seconds an idle sequence keeps its state [SEQSERVE_MAX_SEQUENCE_IDLE, 300]",
    )
    serve.add_argument("--log-level", dest="log_level", help="logging level [SEQSERVE_LOG_LEVEL, info]")
    serve.set_defaults(run=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except SeqserveError as e:
        print(f"seqserve {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
