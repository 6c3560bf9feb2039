"""Generate the Python gRPC/protobuf code of protocols/secagg.proto into secagg/transport/_generated/.

Run with a grpcio-tools whose generated code runs on protobuf 5.29 .. 7.x (grpcio-tools 1.71.0 emits
protobuf 5.29 gencode, which newer runtimes accept), in its own environment because it pins protobuf < 6:

    python3 -m venv /tmp/gen && /tmp/gen/bin/pip install grpcio-tools==1.71.0
    /tmp/gen/bin/python protocols/generate_python.py           # write the files
    /tmp/gen/bin/python protocols/generate_python.py --check   # CI: fail if the committed files differ
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "protocols" / "secagg.proto"
OUT = ROOT / "secagg" / "transport" / "_generated"
FILES = ("secagg_pb2.py", "secagg_pb2.pyi", "secagg_pb2_grpc.py")
TOOLS_VERSION = "1.71.0"


def generate(into: Path) -> None:
    """Run protoc, then make the generated import package-relative."""
    import grpc_tools
    from grpc_tools import protoc

    version = getattr(grpc_tools, "__version__", None)
    if version is None:
        from importlib.metadata import version as _v

        version = _v("grpcio-tools")
    if version != TOOLS_VERSION:
        sys.exit(f"grpcio-tools {TOOLS_VERSION} expected (protobuf 5.29 gencode), found {version}")
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO.parent}",
        f"-I{include}",
        f"--python_out={into}",
        f"--pyi_out={into}",
        f"--grpc_python_out={into}",
        str(PROTO),
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    grpc_file = into / "secagg_pb2_grpc.py"
    text = grpc_file.read_text()
    relative = text.replace("import secagg_pb2 as secagg__pb2", "from . import secagg_pb2 as secagg__pb2")
    grpc_file.write_text(relative)


def main() -> int:
    """Write or check the generated files."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    args = p.parse_args()
    if not args.check:
        OUT.mkdir(parents=True, exist_ok=True)
        generate(OUT)
        print(f"wrote {', '.join(FILES)} into {OUT.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        bad = []
        for name in FILES:
            fresh = (Path(tmp) / name).read_text().splitlines(keepends=True)
            committed = (OUT / name).read_text().splitlines(keepends=True) if (OUT / name).exists() else []
            if fresh != committed:
                bad.append(name)
                diff = difflib.unified_diff(committed, fresh, f"committed/{name}", f"fresh/{name}")
                sys.stdout.writelines(diff)
    if bad:
        print(f"generated code is stale: {', '.join(bad)}; run protocols/generate_python.py")
        return 1
    print("generated code matches protocols/secagg.proto")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
