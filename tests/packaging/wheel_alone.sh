#!/usr/bin/env bash
# The wheel, alone: build the sdist and the wheel, install the wheel (with the plots extra, for
# the report) into a fresh virtualenv outside the source tree, and from an empty folder run a
# small experiment, its report and status; check the package data (py.typed) and that each
# optional extra that is not installed is refused in one line naming it. Run by `make test`.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
py="${PYTHON:-$here/.venv/bin/python}"
work="$(mktemp -d "${TMPDIR:-/tmp}/firepbt-wheel.XXXXXX")"
trap 'rm -rf "$work"' EXIT
fail() { echo "wheel_alone: FAILED: $*" >&2; exit 1; }

"$py" -m build --sdist --wheel --outdir "$work/dist" "$here" > "$work/build.log" 2>&1 \
    || { tail -20 "$work/build.log"; fail "python -m build"; }
whl=$(ls "$work"/dist/firepbt-*.whl) && ls "$work"/dist/firepbt-*.tar.gz > /dev/null
python3 -m venv "$work/venv"
pip="$work/venv/bin/pip"
"$pip" install -q torch==2.13.0 2>&1 | grep -v "is ignored" || true   # the CPU build
"$pip" install -q "$whl[plots]" 2>&1 | grep -v "is ignored" || true
bin="$work/venv/bin"
mkdir "$work/empty" && cd "$work/empty"
# imported from the installed wheel, not from a source tree
"$bin/python" -c "import firepbt, pathlib, sys; p = pathlib.Path(firepbt.__file__).parent; \
assert 'site-packages' in str(p), p; assert (p / 'py.typed').is_file(), 'py.typed'; \
import firepbt.tracking, firepbt.report.live" || fail "the installed package"
"$bin/firepbt" run nqm --store s --no-progress --workers 8 --steps 300 > run.txt 2>&1 \
    || { cat run.txt; fail "firepbt run nqm"; }
grep -q "Top objective over the run" run.txt || { cat run.txt; fail "run summary"; }
"$bin/firepbt" report s > report.txt 2>&1 || { cat report.txt; fail "firepbt report"; }
test -s s/report/report.html || fail "no report.html"
grep -q "figure4a" s/report/report.html || fail "the report has no Figure 4a"
"$bin/firepbt" status s > /dev/null || fail "firepbt status"
# extras not installed: one line (exit 2), naming the extra
refused() {  # refused EXTRA ARGS...
    local extra="$1"; shift
    set +e; "$bin/firepbt" "$@" > out.txt 2> err.txt; local rc=$?; set -e
    [ "$rc" = 2 ] || { cat out.txt err.txt; fail "firepbt $* exited $rc, not 2"; }
    [ "$(wc -l < err.txt)" = 1 ] || { cat err.txt; fail "firepbt $*: not one line"; }
    grep -q "firepbt\[$extra\]" err.txt || { cat err.txt; fail "firepbt $*: names no extra $extra"; }
}
refused tensorboard run nqm --store t1 --log tensorboard:tb
refused mlflow run nqm --store t2 --log mlflow:ml
refused wandb run nqm --store t3 --log wandb:p
refused ray run nqm --store t4 --executor ray
refused rl run vmpo --store t5
for s in t1 t2 t3 t4 t5; do [ ! -e "$s" ] || fail "a refused run left $s"; done
# the integrations (Python APIs): importable without their libraries, refused when used
"$bin/python" -c "
from firepbt.errors import MissingExtra
from firepbt.integrations import huggingface, lightning, tune
for extra, make in (('tune', lambda: tune.tune_factory(object, metric='m')),
                    ('lightning', lambda: lightning.lightning_factory(None, None, metric='m')),
                    ('huggingface', lambda: huggingface.huggingface_factory(None, [], []))):
    try:
        make()
    except MissingExtra as exc:
        assert f'firepbt[{extra}]' in str(exc) and '\\n' not in str(exc), exc
    else:
        raise SystemExit(f'{extra}: not refused')
" || fail "an integration without its library"
echo "wheel_alone: ok ($(basename "$whl"): run, report, status from an empty folder; extras refused in one line)"
