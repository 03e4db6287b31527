#!/usr/bin/env bash
# Build .venv idempotently: pinned stack from requirements.lock, horovod built with Gloo after TensorFlow.
# A second run returns in seconds (stamp file keyed on the lock + setup.py contents).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
STAMP="$VENV/.churn-spark-setup"
KEY=$(cat requirements.lock setup.py scripts/setup_venv.sh | sha256sum | cut -d' ' -f1)

die() { echo "setup: ERROR: $*" >&2; exit 1; }

command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2]==(3,11) else 1)' \
  || die "Python 3.11 is required (found: $("$PY" --version 2>&1)). Set PYTHON=/path/to/python3.11."
command -v java >/dev/null 2>&1 || die "Java not found on PATH. Install a JDK 17 (Spark 3.5 runs on Java 8/11/17) and set JAVA_HOME."
java -version 2>&1 | grep -Eq 'version "(1\.8|11|17)' || echo "setup: warning: Spark 3.5 is tested on Java 8/11/17; found: $(java -version 2>&1 | head -1)" >&2
command -v cmake >/dev/null 2>&1 || die "cmake not found: it is needed to build horovod (apt-get install cmake)."
command -v g++ >/dev/null 2>&1 || die "g++ not found: it is needed to build horovod (apt-get install g++)."

# S3Proxy: the S3-compatible server the object-storage tests start on 127.0.0.1 (cached in the Maven repository)
S3PROXY=org/gaul/s3proxy/2.4.1/s3proxy-2.4.1-jar-with-dependencies.jar
S3PROXY_JAR="${MAVEN_REPO:-$HOME/.m2/repository}/$S3PROXY"
if [ ! -f "$S3PROXY_JAR" ]; then
  echo "setup: fetching S3Proxy 2.4.1 for the object-storage tests"
  mvn -q dependency:get -Dartifact=org.gaul:s3proxy:2.4.1:jar:jar-with-dependencies >&2 2>/dev/null \
    || { mkdir -p "$(dirname "$S3PROXY_JAR")" && curl -fsSL -o "$S3PROXY_JAR.part" \
         "https://repo1.maven.org/maven2/$S3PROXY" && mv "$S3PROXY_JAR.part" "$S3PROXY_JAR"; } \
    || die "could not fetch $S3PROXY (needs mvn or curl and Maven Central)"
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ]; then
  echo "setup: $VENV is up to date"; exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade 'pip<25' 'setuptools<70' wheel
echo "setup: installing the pinned stack (first run downloads ~1 GB; later runs use pip's cache)"
grep -v '^horovod' requirements.lock > "$VENV/constraints.txt"
$PIP install --quiet -c "$VENV/constraints.txt" \
  tensorflow-cpu numpy pandas pyarrow pyspark delta-spark scikit-learn mlflow boto3 pyyaml pydantic matplotlib pytest ruff
if ! "$VENV/bin/python" -c 'import horovod.tensorflow, horovod.spark' >/dev/null 2>&1; then
  echo "setup: building horovod 0.28.1 with Gloo against TensorFlow (~4 min the first time; pip caches the wheel)"
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_PYTORCH=1 \
  HOROVOD_WITHOUT_MXNET=1 HOROVOD_CPU_OPERATIONS=GLOO MAKEFLAGS=-j2 \
    $PIP install --quiet --no-build-isolation -c "$VENV/constraints.txt" 'horovod[spark]==0.28.1'
fi
$PIP install --quiet --no-deps -e .

echo "setup: verifying the build"
"$VENV/bin/python" -c 'import pyspark, delta, tensorflow, horovod.spark, horovod.tensorflow.keras, mlflow, sklearn' \
  || die "an import failed (see above); remove $VENV and run make setup again"
CHECK=$("$VENV/bin/horovodrun" --check-build 2>&1) || die "horovodrun --check-build failed: $CHECK"
echo "$CHECK" | grep -q '\[X\] TensorFlow' || die "horovod was built without TensorFlow support:\n$CHECK"
echo "$CHECK" | grep -q '\[X\] Gloo' || die "horovod was built without Gloo:\n$CHECK"
echo "$KEY" > "$STAMP"
echo "setup: $VENV ready"
