#!/usr/bin/env bash
# make demo: install mlplane with Helm on the local cluster, apply examples/iris, follow
# it from training to serving, then query the model over the KServe V2 protocol.
#
#   hack/demo.sh        (the Makefile's `demo` target runs `make cluster-up` first)
#
# Safe to re-run: `helm upgrade --install` and `kubectl apply` change only what changed,
# so a second run finds iris already served and takes seconds.
#
# Environment:
#   MLPLANE_DEMO_NAMESPACE  where iris goes (default mlplane-demo)
#   MLPLANE_DEMO_TIMEOUT    seconds each stage may take before the demo gives up (180)
#
# The images are the Dockerfile's operator and runtime targets, built from this checkout
# by `make cluster-up` (hack/build-images.sh) and pushed to the local cluster's registry;
# the chart runs them by digest.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
CLUSTER_DIR=${MLPLANE_CLUSTER_DIR:-$REPO/.cluster}
export KUBECONFIG=$CLUSTER_DIR/kubeconfig
export PATH=${MLPLANE_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mlplane/bin}:$PATH
PYTHON=$REPO/.venv/bin/python

RELEASE=mlplane
SYSTEM_NS=mlplane-system
NS=${MLPLANE_DEMO_NAMESPACE:-mlplane-demo}
image() {  # the reference hack/build-images.sh recorded for an image: registry/repo@digest
  sed -n "s/^IMAGE_$1=//p" "${MLPLANE_IMAGES_ENV:-$CLUSTER_DIR/images.env}" 2>/dev/null
}
TIMEOUT=${MLPLANE_DEMO_TIMEOUT:-180}
MODEL=iris
ROW='[5.1, 3.5, 1.4, 0.2]'  # one iris flower (sepal length/width, petal length/width, cm)

STARTED=$SECONDS  # reset when the example is applied
say() { printf '==> %s\n' "$*"; }
step() { printf '  [%3ss] %s\n' "$((SECONDS - STARTED))" "$*"; }
die() { printf '\nmake demo failed: %s\n' "$*" >&2; exit 1; }

# jsonpath of one object in the demo namespace; empty when it does not exist (yet).
field() { kubectl get -n "$NS" "$1" -o "jsonpath=$2" 2>/dev/null || true; }

# --- what went wrong: status, conditions, events, operator log --------------------------

conditions() {  # <resource>: its conditions, one a line
  field "$1" '{range .status.conditions[*]}    {.type}={.status} {.reason}: {.message}{"\n"}{end}'
}

operator_log() {
  local pod
  for pod in $(kubectl get pods -n "$SYSTEM_NS" -l "app.kubernetes.io/instance=$RELEASE" \
    -o jsonpath='{.items[*].metadata.name}' 2>/dev/null); do
    echo "--- kubectl logs -n $SYSTEM_NS $pod --tail=40"
    kubectl logs -n "$SYSTEM_NS" "$pod" --tail=40 2>&1 || true
  done
}

diagnose() {  # everything a person needs to see why a stage did not complete
  {
    echo
    echo "--- kubectl get mlplane,jobs,deployments,pods -n $NS"
    kubectl get mlplane,jobs,deployments,pods -n "$NS" -o wide 2>&1 || true
    local resource
    for resource in "trainingjob/$MODEL" "modelversion/${VERSION_NAME:-}" "inferenceservice/$MODEL"; do
      [ "${resource#*/}" ] || continue
      echo "--- $resource: phase=$(field "$resource" '{.status.phase}') conditions:"
      conditions "$resource"
    done
    echo "--- events in $NS (last 20)"
    kubectl get events -n "$NS" --sort-by=.lastTimestamp 2>&1 | tail -n 20 || true
    echo "--- operator pods in $SYSTEM_NS"
    kubectl get pods -n "$SYSTEM_NS" -o wide 2>&1 || true
    operator_log
  } >&2
}

# wait_until <what> <probe>: run <probe> every second until it succeeds (status 0), or
# fails for good (status 2), or TIMEOUT seconds pass. The probe prints progress lines.
wait_until() {
  local what=$1 probe=$2 deadline=$((SECONDS + TIMEOUT)) rc
  while :; do
    rc=0
    "$probe" || rc=$?
    case $rc in
      0) return 0 ;;
      2) diagnose; die "$what failed (see the conditions, events and operator log above)" ;;
    esac
    if [ "$SECONDS" -ge "$deadline" ]; then
      diagnose
      die "$what did not happen within ${TIMEOUT}s (MLPLANE_DEMO_TIMEOUT); see above"
    fi
    sleep 1
  done
}

LAST_LINE=""
report() {  # print a progress line only when it changed
  if [ "$1" != "$LAST_LINE" ]; then
    step "$1"
    LAST_LINE=$1
  fi
}

# --- the stages ------------------------------------------------------------------------

VERSION="" VERSION_NAME=""

trained() {
  local phase generation observed run version metric
  IFS='|' read -r phase generation observed run version metric < <(field "trainingjob/$MODEL" \
    '{.status.phase}|{.metadata.generation}|{.status.observedGeneration}|{.status.activeRun}|{.status.lastVersion}|{.status.lastMetric.name}={.status.lastMetric.value}{"\n"}')
  if [ "$observed" != "$generation" ]; then
    report "TrainingJob $MODEL: waiting for the operator to pick it up"
    return 1
  fi
  case $phase in
    Succeeded)
      [ -n "$version" ] || { report "TrainingJob $MODEL: Succeeded, registering the version"; return 1; }
      VERSION=$version VERSION_NAME=$MODEL-v$version
      report "TrainingJob $MODEL: Succeeded ($metric on the hold-out set)"
      ;;
    Failed) report "TrainingJob $MODEL: Failed"; return 2 ;;
    Running) report "TrainingJob $MODEL: Running (training pod of run ${run:-?})"; return 1 ;;
    *) report "TrainingJob $MODEL: ${phase:-Pending}"; return 1 ;;
  esac
}

registered() {
  local stage
  stage=$(field "modelversion/$VERSION_NAME" '{.spec.stage}')
  [ -n "$stage" ] || { report "ModelVersion $VERSION_NAME: not registered yet"; return 1; }
  report "ModelVersion $VERSION_NAME: registered (stage $stage)"
}

verified() {
  local phase ok
  IFS='|' read -r phase ok < <(field "modelversion/$VERSION_NAME" '{.status.phase}|{.status.verified}{"\n"}')
  case $phase/$ok in
    */true) report "ModelVersion $VERSION_NAME: verified (sha256, loads in ONNX Runtime, signature)" ;;
    Failed/*) report "ModelVersion $VERSION_NAME: verification failed"; return 2 ;;
    *) report "ModelVersion $VERSION_NAME: ${phase:-Pending} (verification pod)"; return 1 ;;
  esac
}

promoted() {
  local stage
  stage=$(field "modelversion/$VERSION_NAME" '{.spec.stage}')
  [ "$stage" = Production ] || { report "ModelVersion $VERSION_NAME: $stage, waiting for promotion"; return 1; }
  report "ModelVersion $VERSION_NAME: promoted to Production (autoPromote: accuracy >= 0.9)"
}

serving() {
  local phase served ready replicas url
  IFS='|' read -r phase served ready replicas url < <(field "inferenceservice/$MODEL" \
    '{.status.phase}|{.status.servingVersion}|{.status.readyReplicas}|{.status.replicas}|{.status.url}{"\n"}')
  if [ "$phase" = Ready ] && [ "$served" = "$VERSION" ] && [ "${ready:-0}" -ge 1 ]; then
    report "InferenceService $MODEL: serving $VERSION_NAME, $ready/$replicas ready ($url)"
    return 0
  fi
  [ "$phase" != Failed ] || { report "InferenceService $MODEL: Failed"; return 2; }
  report "InferenceService $MODEL: ${phase:-Pending}, serving v${served:-none}, ${ready:-0}/${replicas:-0} ready"
  return 1
}

URL=""
service_url() {
  URL=$(field "inferenceservice/$MODEL" '{.status.url}')
  [ -n "$URL" ] || { report "InferenceService $MODEL: no status.url yet"; return 1; }
}

# POST one row to the InferenceService's URL (its Service, resolved by the cluster's DNS)
# from a pod in the cluster, as a client application would, and print the prediction.
CLIENT=$(cat <<'EOF'
import json, sys, time, urllib.request
url, row = sys.argv[1], json.loads(sys.argv[2])
body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}]}
request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
for attempt in range(10):
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.load(response)
        break
    except OSError as error:
        if attempt == 9:
            sys.exit(f"POST {url}: {error}")
        time.sleep(1)
print(f"  POST {url}")
print(f"       {json.dumps(body)}")
for output in answer["outputs"]:
    print(f"  -> {output['name']}: {output['data']}  ({output['datatype']}, shape {output['shape']})")
label = next(o["data"][0] for o in answer["outputs"] if o["name"] == "label")
species = ["setosa", "versicolor", "virginica"]  # scikit-learn's iris.target_names
print(f"  prediction: class {label} = Iris {species[int(label)]}")
EOF
)

infer() {
  local pod=$MODEL-client phase=""
  kubectl delete pod -n "$NS" "$pod" --ignore-not-found --wait >/dev/null
  kubectl apply -n "$NS" -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $pod
spec:
  restartPolicy: Never
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: client
      image: $(image RUNTIME)
      command: [python, -c, $(printf '%s' "$CLIENT" | "$PYTHON" -c 'import json,sys; print(json.dumps(sys.stdin.read()))'), "$URL/v2/models/$MODEL/infer", "$ROW"]
      securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
EOF
  for _ in $(seq "$TIMEOUT"); do
    phase=$(field "pod/$pod" '{.status.phase}')
    case $phase in Succeeded|Failed) break ;; esac
    sleep 1
  done
  kubectl logs -n "$NS" "$pod"
  kubectl delete pod -n "$NS" "$pod" --wait=false >/dev/null
  [ "$phase" = Succeeded ]
}

# --- 1. the cluster and a clear field ---------------------------------------------------

[ -x "$PYTHON" ] || die "no .venv: run 'make demo' (it runs make dev and make cluster-up first)"
kubectl get --raw /readyz >/dev/null 2>&1 ||
  die "the local cluster is not running: run 'make cluster-up' (or 'make demo')"

# An operator started by hand on the host (not in a pod: it shares our network namespace)
# that watches every namespace, or this one (names or globs such as op-*), would
# reconcile the demo alongside the installed one.
watches_demo() {  # <MLPLANE_WATCH_NAMESPACES value>
  local pattern patterns
  [ -n "$1" ] || return 0
  IFS=, read -ra patterns <<<"$1"
  for pattern in "${patterns[@]}"; do
    # shellcheck disable=SC2053  # the pattern is a glob on purpose
    [[ $NS == $pattern ]] && return 0
  done
  return 1
}
for proc in /proc/[0-9]*; do
  grep -qa mlplane_operator "$proc/cmdline" 2>/dev/null || continue
  [ "$(readlink "$proc/ns/net" 2>/dev/null)" = "$(readlink /proc/self/ns/net)" ] || continue
  watched=$(tr '\0' '\n' <"$proc/environ" 2>/dev/null | sed -n 's/^MLPLANE_WATCH_NAMESPACES=//p')
  if watches_demo "$watched"; then
    die "an operator runs on the host (pid ${proc#/proc/}) watching ${watched:-every namespace}; it
would reconcile $NS alongside the installed one. Stop it, restrict it with
MLPLANE_WATCH_NAMESPACES, or pick another namespace with MLPLANE_DEMO_NAMESPACE."
  fi
done

# --- 2. install mlplane as a user would -------------------------------------------------

say "namespace $NS"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null

# The operator watches only the demo namespace (the chart's namespace-scoped mode: a Role
# there, no ClusterRole over workloads), so it leaves the rest of the cluster alone.
OPERATOR_IMAGE=$(image OPERATOR) RUNTIME_IMAGE=$(image RUNTIME)
[ -n "$OPERATOR_IMAGE" ] && [ -n "$RUNTIME_IMAGE" ] ||
  die "no images in $CLUSTER_DIR/images.env: run 'make cluster-up' (it builds them)"
say "helm upgrade --install $RELEASE charts/mlplane -n $SYSTEM_NS"
echo "  images: $OPERATOR_IMAGE"
echo "          $RUNTIME_IMAGE"
helm_started=$SECONDS
if ! helm upgrade --install "$RELEASE" charts/mlplane -n "$SYSTEM_NS" --create-namespace \
  --set "image.repository=${OPERATOR_IMAGE%@*}" --set "image.digest=${OPERATOR_IMAGE#*@}" \
  --set "runtime.image.repository=${RUNTIME_IMAGE%@*}" \
  --set "runtime.image.digest=${RUNTIME_IMAGE#*@}" --set "watchNamespaces={$NS}" \
  --wait --timeout "${TIMEOUT}s" >/dev/null; then
  diagnose
  die "helm could not install mlplane (operator pod status and log above)"
fi
echo "  operator ready in $((SECONDS - helm_started))s: $(kubectl get deploy -n "$SYSTEM_NS" \
  "$RELEASE" -o jsonpath='{.spec.template.spec.containers[0].image}')"

# --- 3. apply the example and follow it -------------------------------------------------

say "kubectl apply -n $NS -f examples/iris/"
STARTED=$SECONDS
applied_ns=$(date +%s%N)
kubectl apply -n "$NS" -f examples/iris/ | sed 's/^/  /'

wait_until "training" trained
wait_until "registering $MODEL-v$VERSION" registered
wait_until "verifying $VERSION_NAME" verified
wait_until "promoting $VERSION_NAME to Production" promoted
wait_until "serving $VERSION_NAME" serving
wait_until "the InferenceService's URL" service_url

say "KServe V2 inference request to $URL, from a pod in $NS"
if ! answer=$(infer 2>&1); then
  diagnose
  die "the inference request failed: $answer"
fi
served_ns=$(date +%s%N)
echo "$answer"

say "kubectl get mlplane -n $NS"
kubectl get mlplane -n "$NS"

echo
say "apply -> served: $(awk -v ns="$((served_ns - applied_ns))" 'BEGIN { printf "%.1f", ns / 1e9 }')s"
