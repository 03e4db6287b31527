#!/usr/bin/env bash
# spark-submit wrapper for the churn-spark jobs (jobs/<JOB>.py) on YARN, Kubernetes, standalone or local Spark.
#
#   deploy/submit.sh --master URL [--deploy-mode client|cluster] [--python-env packed|local|image] [--dry-run]
#                    [spark-submit options, e.g. --conf k=v ...] JOB [job args...]
#
#   deploy/submit.sh --master yarn --deploy-mode cluster weekly --config conf/cluster.yaml --run-date 2026-11-02
#   deploy/submit.sh --master spark://head:7077 --python-env local train --config conf/cluster.yaml
#   deploy/submit.sh --dry-run --master spark://127.0.0.1:7077 weekly --run-date 2026-11-02
#
# JOB is the name of a file in jobs/ (weekly, train, score, build_sequences, generate_lake; '-' works for '_').
#
# What it adds to spark-submit (see deploy/README.md for the why):
#   --py-files build/churn_spark.zip          the churn_spark package, zipped fresh on every real submit
#   --files conf/*.yaml                       the config profiles (plus any --config file outside conf/)
#   --packages io.delta:delta-spark_2.12:3.3.3 and the Delta SQL extension / catalog confs
#   --packages org.apache.hadoop:hadoop-aws:3.3.4  the S3A filesystem, for s3a:// locations (work_dir, lake_root,
#                                             sources); the Hadoop version pyspark 3.5 ships (S3A_PACKAGE)
#   spark.dynamicAllocation.enabled=false, spark.task.cpus=1   (Horovod needs num_proc concurrent tasks)
#   the Python environment, by --python-env:
#     packed  build/env.tar.gz (venv-pack if installed, else a plain tar of the venv) shipped with
#             --archives ...#environment and spark.pyspark.python=./environment/bin/python   (YARN, K8s)
#     local   spark.pyspark.python=$VENV/bin/python: every host has the same venv at the same absolute path
#             (standalone clusters on shared/identical hosts, tests)
#     image   the interpreter baked into the Docker image (deploy/Dockerfile); the app and conf are read from
#             the image (local://$IMAGE_APP_ROOT/...), nothing is shipped                         (K8s)
#   Default: local for local[*] and spark://, packed for yarn, image for k8s://.
#
# Extra spark-submit options: put them before JOB (e.g. --conf spark.executor.memory=8g --num-executors 4) or in
# SPARK_SUBMIT_EXTRA (whitespace-separated, no quoting). Later settings win: defaults < SPARK_SUBMIT_EXTRA < args.
#
# Environment:
#   VENV                 venv whose bin/spark-submit and python are used            (default: <repo>/.venv)
#   SPARK_SUBMIT         spark-submit to run                                        (default: $VENV/bin/spark-submit)
#   SPARK_SUBMIT_EXTRA   extra spark-submit arguments
#   DELTA_PACKAGE        Maven coordinate for Delta                    (default: io.delta:delta-spark_2.12:3.3.3)
#   DELTA_JARS           comma-separated Delta jars to pass with --jars instead of --packages (offline clusters)
#   S3A_PACKAGE          Maven coordinate of the S3A filesystem              (default: org.apache.hadoop:hadoop-aws:3.3.4)
#                        set it empty (S3A_PACKAGE=) when the cluster's Spark already has S3A or nothing is on s3a://
#   S3A_JARS             comma-separated hadoop-aws + aws-java-sdk-bundle jars for --jars instead of S3A_PACKAGE
#                        (offline; --python-env image defaults to the two jars the image pre-resolved in IMAGE_IVY)
#   EXTRA_PACKAGES       more comma-separated Maven coordinates for --packages, e.g. the ABFS or GCS connector
#                        (a --packages option of your own would replace submit.sh's, Delta included)
#   PACK_VENV            venv to pack for --python-env packed                       (default: $VENV)
#   REBUILD_ENV=1        re-pack build/env.tar.gz even if it looks up to date
#   BUILD_DIR            where the zip / env tarball go                             (default: <repo>/build)
#   IMAGE_APP_ROOT       repo location inside the image                             (default: /opt/churn-spark)
#   IMAGE_PYTHON         python inside the image                                    (default: /opt/venv/bin/python)
#   IMAGE_IVY            Ivy dir the image pre-resolved Delta and hadoop-aws into (image mode uses its jars)
#                                                                                    (default: /opt/ivy)
#   HOROVOD_GLOO_TIMEOUT_SECONDS   if set, forwarded to the driver and the executors
#   CHURN_SPARK_CONF_DIR the dir holding default.yaml, for the driver (client mode: <repo>/conf; set for you)
#   SUBMIT_APP           (testing) submit this Python script instead of jobs/<JOB>.py; then no JOB is given and
#                        every remaining argument goes to the script
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
VENV=${VENV:-$REPO/.venv}
SPARK_SUBMIT=${SPARK_SUBMIT:-$VENV/bin/spark-submit}
BUILD_DIR=${BUILD_DIR:-$REPO/build}
DELTA_PACKAGE=${DELTA_PACKAGE:-io.delta:delta-spark_2.12:3.3.3}
DELTA_JARS=${DELTA_JARS:-}
# hadoop-aws 3.3.4 = the Hadoop client pyspark 3.5 bundles; it pulls com.amazonaws:aws-java-sdk-bundle:1.12.262.
# An empty S3A_PACKAGE (set, but empty) leaves S3A out.
S3A_DEFAULT_PACKAGE=org.apache.hadoop:hadoop-aws:3.3.4
S3A_SDK_BUNDLE_JAR=com.amazonaws_aws-java-sdk-bundle-1.12.262.jar
S3A_PACKAGE=${S3A_PACKAGE-$S3A_DEFAULT_PACKAGE}
S3A_JARS=${S3A_JARS:-}
EXTRA_PACKAGES=${EXTRA_PACKAGES:-}
PACK_VENV=${PACK_VENV:-$VENV}
IMAGE_APP_ROOT=${IMAGE_APP_ROOT:-/opt/churn-spark}
IMAGE_PYTHON=${IMAGE_PYTHON:-/opt/venv/bin/python}
IMAGE_IVY=${IMAGE_IVY:-/opt/ivy}
ZIP="$BUILD_DIR/churn_spark.zip"
ENV_TGZ="$BUILD_DIR/env.tar.gz"

die() { echo "submit.sh: ERROR: $*" >&2; exit 2; }
note() { echo "submit.sh: $*" >&2; }
list_jobs() { local f out=""; for f in "$REPO"/jobs/*.py; do [ -f "$f" ] && out+="$(basename "$f" .py) "; done; echo "${out:-(none yet)}"; }
# Print a command so that it can be pasted into a shell (quotes only what needs quoting). It goes to logs, so the
# value of a setting whose key holds secret/password/token/credential is shown as *** (spark-submit gets the real one).
shell_join() {
  local a key out=""
  for a in "$@"; do
    key=${a%%=*}
    [[ "$a" == *=* && "${key,,}" =~ (secret|password|token|credential) ]] && a="$key=***"
    if [[ "$a" =~ ^[A-Za-z0-9_@%+=:,./#-]+$ ]]; then out+="$a "
    else out+="'${a//\'/\'\\\'\'}' "; fi
  done
  echo "${out% }"
}
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

# ---- options (everything up to JOB) -------------------------------------------------------------
MASTER="" DEPLOY_MODE="client" PYENV="" DRY_RUN=0
PASSTHRU=()
need_value() { if [ "$#" -lt 2 ] || [ -z "$2" ]; then die "option $1 needs a value (see --help)"; fi; }
while [ "$#" -gt 0 ]; do
  case "$1" in
    --master) need_value "$@"; MASTER=$2; shift 2 ;;
    --master=*) MASTER=${1#*=}; shift ;;
    --deploy-mode) need_value "$@"; DEPLOY_MODE=$2; shift 2 ;;
    --deploy-mode=*) DEPLOY_MODE=${1#*=}; shift ;;
    --python-env) need_value "$@"; PYENV=$2; shift 2 ;;
    --python-env=*) PYENV=${1#*=}; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    --verbose|-v|--supervise) PASSTHRU+=("$1"); shift ;;      # spark-submit flags without a value
    --*=*) PASSTHRU+=("$1"); shift ;;
    --*) need_value "$@"; PASSTHRU+=("$1" "$2"); shift 2 ;;   # any other spark-submit option takes a value
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done

[ -n "$MASTER" ] || die "--master is required: local[N], spark://HOST:7077, yarn or k8s://https://API:443 (see --help)"
case "$MASTER" in
  local|local\[*\]) KIND=local ;;
  spark://*) KIND=standalone ;;
  yarn) KIND=yarn ;;
  k8s://*) KIND=k8s ;;
  *) die "unsupported --master '$MASTER': expected local[N], spark://HOST:PORT, yarn or k8s://https://HOST:PORT" ;;
esac
case "$DEPLOY_MODE" in
  client|cluster) ;;
  *) die "--deploy-mode must be client or cluster, got '$DEPLOY_MODE'" ;;
esac
[ "$KIND" = local ] && [ "$DEPLOY_MODE" = cluster ] && die "--deploy-mode cluster makes no sense with --master $MASTER"
[ "$KIND" = standalone ] && [ "$DEPLOY_MODE" = cluster ] && \
  die "Spark standalone does not support --deploy-mode cluster for Python applications; use client mode"
if [ -z "$PYENV" ]; then
  case "$KIND" in local|standalone) PYENV=local ;; yarn) PYENV=packed ;; k8s) PYENV=image ;; esac
fi
case "$PYENV" in
  packed|local|image) ;;
  *) die "--python-env must be packed, local or image, got '$PYENV'" ;;
esac
[ "$PYENV" = image ] && [ "$KIND" != k8s ] && die "--python-env image is for k8s:// masters (the image holds the env)"
[ "$PYENV" = image ] && [ "$DEPLOY_MODE" = client ] && \
  die "--python-env image needs --deploy-mode cluster (the driver must run in the image); use packed for client mode"

# ---- the application: jobs/<JOB>.py, or SUBMIT_APP for tests ----------------------------------------------
if [ -n "${SUBMIT_APP:-}" ]; then
  [ -f "$SUBMIT_APP" ] || die "SUBMIT_APP=$SUBMIT_APP does not exist"
  APP=$(cd "$(dirname "$SUBMIT_APP")" && pwd)/$(basename "$SUBMIT_APP")
  NAME="churn-spark-$(basename "$SUBMIT_APP" .py)"
  [ "$PYENV" = image ] && die "SUBMIT_APP cannot be used with --python-env image (the script is not in the image)"
else
  [ "$#" -gt 0 ] || die "no JOB given: expected one of: $(list_jobs)"
  JOB=$1; shift
  [[ "$JOB" =~ ^[a-z][a-z0-9_-]*$ ]] || die "bad JOB name '$JOB' (expected one of: $(list_jobs))"
  JOB=${JOB//-/_}   # generate-lake (the CLI's spelling) -> jobs/generate_lake.py
  APP="$REPO/jobs/$JOB.py"
  NAME="churn-spark-$JOB"
  if [ ! -f "$APP" ]; then
    msg="job '$JOB' not found: $APP does not exist (jobs: $(list_jobs))"
    if [ "$DRY_RUN" = 1 ]; then note "warning: $msg"; else die "$msg"; fi
  fi
  [ "$PYENV" = image ] && APP="local://$IMAGE_APP_ROOT/jobs/$JOB.py"
fi
JOB_ARGS=("$@")

# ---- config files: ship conf/*.yaml; in cluster mode the driver sees them by basename -------------------
CONF_FILES=()
for f in "$REPO"/conf/*.yaml; do [ -f "$f" ] && CONF_FILES+=("$f"); done
declare -A SHIPPED=()
for f in "${CONF_FILES[@]}"; do SHIPPED[$(basename "$f")]=$f; done
abspath() { (cd "$(dirname "$1")" && echo "$(pwd)/$(basename "$1")"); }
REWRITTEN=()
i=0
while [ "$i" -lt "${#JOB_ARGS[@]}" ]; do
  a=${JOB_ARGS[$i]}
  if [ "$a" = --config ] && [ $((i + 1)) -lt "${#JOB_ARGS[@]}" ]; then
    f=${JOB_ARGS[$((i + 1))]}
    if [ "$PYENV" = image ]; then
      # The image holds <repo>/conf at $IMAGE_APP_ROOT/conf; other paths must exist inside the pod (ConfigMap).
      case "$f" in
        conf/*|./conf/*|"$REPO"/conf/*) f="$IMAGE_APP_ROOT/conf/$(basename "$f")" ;;
      esac
    elif [ "$DEPLOY_MODE" = cluster ]; then
      [ -f "$f" ] || die "--config $f: file not found (paths are relative to $(pwd))"
      b=$(basename "$f"); af=$(abspath "$f")
      if [ -n "${SHIPPED[$b]:-}" ] && [ "${SHIPPED[$b]}" != "$af" ]; then
        die "--config $f: another shipped config is also named $b (${SHIPPED[$b]}); rename one of them"
      fi
      [ -z "${SHIPPED[$b]:-}" ] && { SHIPPED[$b]=$af; CONF_FILES+=("$af"); }
      f=$b   # --files puts it in the driver's working directory
    fi
    REWRITTEN+=(--config "$f"); i=$((i + 2)); continue
  fi
  REWRITTEN+=("$a"); i=$((i + 1))
done
JOB_ARGS=("${REWRITTEN[@]+"${REWRITTEN[@]}"}")

# ---- assemble the spark-submit command ----------------------------------------------------------------------
CMD=("$SPARK_SUBMIT" --master "$MASTER" --deploy-mode "$DEPLOY_MODE" --name "$NAME")
if [ -z "$DELTA_JARS" ] && [ "$PYENV" = image ]; then
  # The image resolved Delta into its Ivy dir at build time: use those jars, no resolution at submit time.
  IFS=: read -r _dg _da DELTA_VERSION <<< "$DELTA_PACKAGE"
  [ -n "${DELTA_VERSION:-}" ] || die "DELTA_PACKAGE=$DELTA_PACKAGE: expected group:artifact:version"
  DELTA_JARS="local://$IMAGE_IVY/jars/${_dg}_${_da}-$DELTA_VERSION.jar,local://$IMAGE_IVY/jars/${_dg}_delta-storage-$DELTA_VERSION.jar"
fi
if [ -z "$S3A_JARS" ] && [ "$PYENV" = image ] && [ "$S3A_PACKAGE" = "$S3A_DEFAULT_PACKAGE" ]; then
  # the image pre-resolved hadoop-aws 3.3.4 and its AWS SDK bundle into the same Ivy dir (deploy/Dockerfile)
  S3A_JARS="local://$IMAGE_IVY/jars/org.apache.hadoop_hadoop-aws-3.3.4.jar,local://$IMAGE_IVY/jars/$S3A_SDK_BUNDLE_JAR"
fi
JARS=() PACKAGES=()
if [ -n "$DELTA_JARS" ]; then JARS+=("$DELTA_JARS"); else PACKAGES+=("$DELTA_PACKAGE"); fi
# S3A for s3a:// locations: spark-submit must put it on the classpath (the job adds it itself only when it starts
# Spark without spark-submit)
if [ -n "$S3A_JARS" ]; then JARS+=("$S3A_JARS"); elif [ -n "$S3A_PACKAGE" ]; then PACKAGES+=("$S3A_PACKAGE"); fi
[ -n "$EXTRA_PACKAGES" ] && PACKAGES+=("$EXTRA_PACKAGES")
[ "${#JARS[@]}" -gt 0 ] && CMD+=(--jars "$(IFS=,; echo "${JARS[*]}")")
[ "${#PACKAGES[@]}" -gt 0 ] && CMD+=(--packages "$(IFS=,; echo "${PACKAGES[*]}")")
CMD+=(
  --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension
  --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog
  --conf spark.dynamicAllocation.enabled=false
  --conf spark.task.cpus=1
)
if [ "$PYENV" != image ]; then
  CMD+=(--py-files "$ZIP")
  FILES=$(IFS=,; echo "${CONF_FILES[*]}")
  [ -n "$FILES" ] && CMD+=(--files "$FILES")
fi
case "$PYENV" in
  local)
    CMD+=(--conf "spark.pyspark.python=$VENV/bin/python" --conf "spark.pyspark.driver.python=$VENV/bin/python") ;;
  packed)
    CMD+=(--archives "$ENV_TGZ#environment" --conf spark.pyspark.python=./environment/bin/python)
    # client mode: the driver runs here, with the local venv; cluster mode: the driver unpacks the archive too
    [ "$DEPLOY_MODE" = client ] && CMD+=(--conf "spark.pyspark.driver.python=$VENV/bin/python") ;;
  image)
    CMD+=(--conf "spark.pyspark.python=$IMAGE_PYTHON" --conf "spark.pyspark.driver.python=$IMAGE_PYTHON") ;;
esac
# Where the driver finds conf/default.yaml when churn_spark is imported from the zip (the package's own
# <package>/../conf does not exist inside a zip): client mode exports it below, cluster modes set it here.
case "$KIND/$DEPLOY_MODE/$PYENV" in
  yarn/cluster/*) CMD+=(--conf spark.yarn.appMasterEnv.CHURN_SPARK_CONF_DIR=.) ;;   # --files land in the AM's cwd
  k8s/cluster/image) CMD+=(--conf "spark.kubernetes.driverEnv.CHURN_SPARK_CONF_DIR=$IMAGE_APP_ROOT/conf") ;;
esac
if [ -n "${HOROVOD_GLOO_TIMEOUT_SECONDS:-}" ]; then
  CMD+=(--conf "spark.executorEnv.HOROVOD_GLOO_TIMEOUT_SECONDS=$HOROVOD_GLOO_TIMEOUT_SECONDS")
  case "$KIND/$DEPLOY_MODE" in
    yarn/cluster) CMD+=(--conf "spark.yarn.appMasterEnv.HOROVOD_GLOO_TIMEOUT_SECONDS=$HOROVOD_GLOO_TIMEOUT_SECONDS") ;;
    k8s/cluster) CMD+=(--conf "spark.kubernetes.driverEnv.HOROVOD_GLOO_TIMEOUT_SECONDS=$HOROVOD_GLOO_TIMEOUT_SECONDS") ;;
  esac   # client mode: the driver inherits this shell's environment
fi
EXTRA=()
[ -n "${SPARK_SUBMIT_EXTRA:-}" ] && read -r -a EXTRA <<< "$SPARK_SUBMIT_EXTRA"
CMD+=("${EXTRA[@]+"${EXTRA[@]}"}" "${PASSTHRU[@]+"${PASSTHRU[@]}"}" "$APP" "${JOB_ARGS[@]+"${JOB_ARGS[@]}"}")

if [ "$DRY_RUN" = 1 ]; then
  [ "$PYENV" != image ] && note "dry run: would build $ZIP"
  [ "$PYENV" = packed ] && note "dry run: would pack $PACK_VENV into $ENV_TGZ (if missing or stale)"
  shell_join "${CMD[@]}"
  exit 0
fi

# ---- build the artifacts and submit -------------------------------------------------------------------------
[ -x "$SPARK_SUBMIT" ] || die "spark-submit not found at $SPARK_SUBMIT: set VENV (a venv with pyspark) or SPARK_SUBMIT"
if [ "$SPARK_SUBMIT" = "$VENV/bin/spark-submit" ]; then
  # pip's spark-submit locates SPARK_HOME with whatever python3 is on PATH; pin it to this venv's pyspark so that
  # the JVM side always matches the Python side (a different SPARK_HOME in the environment is overridden).
  VENV_SPARK_HOME=$("$VENV/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))') \
    || die "pyspark is not importable with $VENV/bin/python"
  if [ -n "${SPARK_HOME:-}" ] && [ "$SPARK_HOME" != "$VENV_SPARK_HOME" ]; then
    note "ignoring SPARK_HOME=$SPARK_HOME: using $VENV_SPARK_HOME (set SPARK_SUBMIT to use another Spark)"
  fi
  export SPARK_HOME=$VENV_SPARK_HOME
fi
[ "$PYENV" = local ] && { [ -x "$VENV/bin/python" ] || die "--python-env local: $VENV/bin/python does not exist"; }
command -v java >/dev/null 2>&1 || [ -n "${JAVA_HOME:-}" ] || die "java not found: install a JDK 17 or set JAVA_HOME"

build_zip() {
  local py tmp
  py="$VENV/bin/python"; [ -x "$py" ] || py=$(command -v python3) || die "no python to build $ZIP"
  [ -d "$REPO/churn_spark" ] || die "package dir $REPO/churn_spark not found"
  mkdir -p "$BUILD_DIR"
  tmp=$(mktemp "$BUILD_DIR/.churn_spark.zip.XXXXXX")
  "$py" - "$REPO" "$tmp" <<'PY' || { rm -f "$tmp"; die "could not build $ZIP"; }
import os, sys, zipfile
repo, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for root, dirs, files in os.walk(os.path.join(repo, "churn_spark")):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        z.write(root, os.path.relpath(root, repo))  # directory entries: zipimport needs them for namespace pkgs
        for f in sorted(files):
            if not f.endswith((".pyc", ".pyo")):
                p = os.path.join(root, f)
                z.write(p, os.path.relpath(p, repo))
PY
  mv -f "$tmp" "$ZIP"   # atomic: concurrent submits never see a half-written zip
}

pack_env() {
  [ -x "$PACK_VENV/bin/python" ] || die "--python-env packed: $PACK_VENV is not a venv (set PACK_VENV or VENV)"
  mkdir -p "$BUILD_DIR"
  if [ -f "$ENV_TGZ" ] && [ "${REBUILD_ENV:-0}" != 1 ] && \
     [ -z "$(find "$PACK_VENV" -newer "$ENV_TGZ" -print -quit 2>/dev/null)" ]; then
    note "reusing $ENV_TGZ (REBUILD_ENV=1 to re-pack)"; return
  fi
  local tmp packer=""
  tmp="$BUILD_DIR/.env.tar.gz.$$"
  if [ -x "$PACK_VENV/bin/venv-pack" ]; then packer="$PACK_VENV/bin/venv-pack"
  elif command -v venv-pack >/dev/null 2>&1; then packer=$(command -v venv-pack); fi
  if [ -n "$packer" ]; then
    note "packing $PACK_VENV with venv-pack (takes a few minutes for the TensorFlow stack)"
    "$packer" -p "$PACK_VENV" -o "$tmp" -f -q || { rm -f "$tmp"; die "venv-pack failed (it refuses editable
  installs such as 'pip install -e .': pack a venv without them via PACK_VENV=/path/to/clean/venv; the
  churn_spark package itself travels in $ZIP, so the packed env does not need it)"; }
  else
    note "venv-pack not installed: packing $PACK_VENV with plain tar. This works only if every node has the same
  OS/glibc and the same base interpreter at $(readlink -f "$PACK_VENV/bin/python") (venv symlinks and script
  shebangs keep absolute paths). pip install venv-pack for relocatable entry scripts."
    tar -czf "$tmp" -C "$PACK_VENV" --exclude='__pycache__' . || { rm -f "$tmp"; die "tar of $PACK_VENV failed"; }
  fi
  mv -f "$tmp" "$ENV_TGZ"
}

[ "$PYENV" != image ] && build_zip
[ "$PYENV" = packed ] && pack_env
[ "$DEPLOY_MODE" = client ] && export CHURN_SPARK_CONF_DIR="${CHURN_SPARK_CONF_DIR:-$REPO/conf}"
note "running: $(shell_join "${CMD[@]}")"
exec "${CMD[@]}"
