"""`pip install keras-s2s` without the `serve` and `explore` extras: train, translate and export
(its warm-up records included) work, `translate --server grpc://` needs no extra (grpcio and
tensorflow-serving-api are core), and `serve` and `explore` say in one line which extra to
install.

A fresh virtual environment would reinstall TensorFlow; instead the commands run in a process
whose import system refuses the extras' modules (a `sys.meta_path` finder), as if they were not
installed.
"""

import json
import pathlib
import subprocess
import sys

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]

WITHOUT_EXTRAS = r"""
import contextlib, io, json, sys

BLOCKED = {"aiohttp", "orjson", "prometheus_client"}


class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, NotInstalled())
from keras_s2s.cli import main

results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(err):
        status = main(argv)
    results.append([status, out.getvalue(), err.getvalue()])
print(json.dumps({"results": results,
                  "loaded": sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)}))
"""


def test_core_commands_work_and_serving_names_its_extra(tmp_path):
    run_dir, base_path = str(tmp_path / "run"), str(tmp_path / "export")
    commands = [
        ["train", "--arch", "seq2seq", "--data", "reverse", "--out", run_dir, "--epochs", "1",
         "--num-pairs", "40", "--batch-size", "64", "--vocab-size", "60", "--max-length", "4",
         "--model-arg", "embedding_dim=8", "--model-arg", "units=8"],
        ["translate", run_dir, "a b c"],
        ["export", run_dir, "--model-name", "m", "--base-path", base_path],
        ["serve", f"--model_base_path={base_path}/m", "--rest_api_port=0", "--port=0"],
        ["explore", run_dir, "--port", "0"],
        ["translate", "--server", "grpc://127.0.0.1:1/m", "a b c"],
    ]
    process = subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS, json.dumps(commands)],
                             cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-2000:]
    report = json.loads(process.stdout.splitlines()[-1])
    (train, translate, export, serve, explore, remote) = report["results"]
    assert [train[0], translate[0], export[0]] == [0, 0, 0], report["results"][:3]
    assert len(translate[1].splitlines()) == 1 and export[1].strip().endswith("/m/1")
    assert (pathlib.Path(export[1].strip()) / "assets.extra" / "tf_serving_warmup_requests"
            ).stat().st_size > 0
    assert report["loaded"] == []
    for (status, out, err), command, extra in ((serve, "serve", "serve"),
                                               (explore, "explore", "explore")):
        assert (status, out) == (2, "")
        assert err == (f"keras-s2s {command}: error: this needs the {extra} extra: pip install "
                       f"'keras-s2s[{extra}]' (No module named 'aiohttp')\n")
    # Nothing listens on port 1: the gRPC client itself answers, in one line.
    assert (remote[0], remote[1]) == (2, "") and len(remote[2].splitlines()) == 1
    assert remote[2].startswith("keras-s2s translate: error: grpc://127.0.0.1:1/m: "), remote[2]
    assert "UNAVAILABLE" in remote[2] and "extra" not in remote[2], remote[2]
