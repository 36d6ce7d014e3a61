#!/usr/bin/env bash
# Starts a local Kubernetes control plane for tests: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok (simulated GPU nodes), as plain processes
# on 127.0.0.1 with free ports. No Docker, no kubelet.
#
# The state (PKI, etcd data, logs, pid files, kubeconfigs) lives in
# ${LLMDEPLOY_TESTENV_DIR:-~/.cache/llmdeploy-testenv/run}. Progress goes to stderr; the last
# line on stdout is the path of the admin kubeconfig. Idempotent: when the control plane in
# the state dir is already running and healthy, this only prints the path. A broken or
# half-started one is stopped and started afresh. hack/testenv/down.sh stops it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"

command -v kubectl >/dev/null 2>&1 || die "kubectl is not on PATH"
command -v openssl >/dev/null 2>&1 || die "openssl is not on PATH"
command -v curl >/dev/null 2>&1 || die "curl is not on PATH"

service_cidr=10.96.0.0/16
service_ip=10.96.0.1
pod_cidr=10.244.0.0/16
nodes_file="$testenv_here/nodes.yaml"
stages_file="$testenv_here/kwok-stages.yaml"
start_timeout="${LLMDEPLOY_TESTENV_TIMEOUT:-180}"

take_lock
bin="$("$testenv_here/build.sh")"
[[ -x "$bin/kube-apiserver" ]] || die "build.sh did not produce binaries in '$bin'"

kc() { kubectl --kubeconfig "$kubeconfig" --request-timeout=10s "$@"; }
expected_nodes="$(grep -c '^kind: Node' "$nodes_file")"

# --- health ------------------------------------------------------------------------------

# all_running: every component runs, and runs the binary of the current build.
all_running() {
  local name pid want
  [[ -f "$state_dir/.llmdeploy-testenv" && -f "$kubeconfig" ]] || return 1
  for name in "${components[@]}"; do
    pid="$(owned_pid "$name")" || return 1
    read -r _ want <"$state_dir/$name.pid"
    [[ "$want" == "$bin/$name" ]] || return 1
  done
}

api_ready() { [[ "$(kc get --raw /readyz 2>/dev/null)" == ok ]]; }

ready_nodes() {
  kc get nodes -l type=kwok \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' \
    2>/dev/null | grep -c '^True$' || true
}

apply_nodes() {
  log "applying $expected_nodes simulated nodes from ${nodes_file#"$testenv_here"/}"
  kc apply -f "$nodes_file" >&2
}

wait_nodes() {
  local deadline=$((SECONDS + start_timeout)) n=0
  while ((SECONDS < deadline)); do
    n="$(ready_nodes)"
    if ((n == expected_nodes)); then
      log "$n nodes Ready"
      return 0
    fi
    component_died && return 1
    sleep 1
  done
  log "only $n of $expected_nodes nodes are Ready after ${start_timeout}s"
  return 1
}

# component_died: true (and logs it) if a component we started has exited.
component_died() {
  local name
  for name in "${components[@]}"; do
    [[ -f "$state_dir/$name.pid" ]] || continue
    if ! owned_pid "$name" >/dev/null; then
      log "$name exited; see $state_dir/logs/$name.log"
      return 0
    fi
  done
  return 1
}

# wait_for <description> <command...>: polls the command until it succeeds.
wait_for() {
  local what="$1" deadline=$((SECONDS + start_timeout))
  shift
  until "$@" >/dev/null 2>&1; do
    component_died && return 1
    if ((SECONDS >= deadline)); then
      log "timed out after ${start_timeout}s waiting for $what"
      return 1
    fi
    sleep 0.5
  done
  log "$what is up"
}

if all_running && api_ready; then
  if (($(ready_nodes) != expected_nodes)); then
    apply_nodes
    wait_nodes || die "simulated nodes did not become Ready"
  fi
  log "already running (state in $state_dir)"
  echo "$kubeconfig"
  exit 0
fi

# Whatever is left of an earlier run (crashed process, stale pid files) goes first.
if [[ -e "$state_dir" ]]; then
  log "the control plane in $state_dir is not (fully) running; starting it afresh"
fi
stop_all

# --- from here on a failure stops everything that was started -----------------------------

on_failure() {
  local rc=$? name keep="${state_dir%/}.last-failure"
  trap - EXIT
  ((rc == 0)) && return
  log "start failed; last lines of each log:"
  for name in "${components[@]}"; do
    [[ -f "$state_dir/logs/$name.log" ]] || continue
    echo "----- $name -----" >&2
    tail -n 15 "$state_dir/logs/$name.log" >&2
  done
  rm -rf "$keep"
  [[ -d "$state_dir/logs" ]] && cp -r "$state_dir/logs" "$keep"
  stop_all
  log "logs kept in $keep"
  exit "$rc"
}
trap on_failure EXIT

mkdir -p "$state_dir"/{pki,logs,etcd,flexvolume}
chmod 700 "$state_dir" "$state_dir/etcd"
touch "$state_dir/.llmdeploy-testenv"
pki="$state_dir/pki"

# --- ports ---------------------------------------------------------------------------------
# Ask the kernel for five free loopback ports at once (held open together, so all differ).
read -r etcd_port peer_port api_port kcm_port sched_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')
printf 'etcd=%s etcd-peer=%s kube-apiserver=%s kube-controller-manager=%s kube-scheduler=%s\n' \
  "$etcd_port" "$peer_port" "$api_port" "$kcm_port" "$sched_port" >"$state_dir/ports"

# --- PKI -----------------------------------------------------------------------------------
log "generating certificates in $pki"
ossl() { openssl "$@" 2>>"$state_dir/logs/openssl.log"; }

cat >"$pki/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = llmdeploy-testenv-ca
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
EOF
# new_ca <name> <common name>
new_ca() {
  ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/$1.key"
  ossl req -x509 -new -key "$pki/$1.key" -config "$pki/ca.cnf" -extensions v3_ca \
    -subj "/CN=$2" -days 3650 -out "$pki/$1.crt"
}
new_ca ca llmdeploy-testenv-ca
# The front-proxy CA lets kube-apiserver authenticate to aggregated API servers, and lets
# the controller-manager and scheduler (and any extension API server) read a complete
# extension-apiserver-authentication ConfigMap.
new_ca front-proxy-ca llmdeploy-testenv-front-proxy-ca

# issue <name> <subject> <extendedKeyUsage> [subjectAltName] [ca]
issue() {
  local name="$1" subj="$2" eku="$3" san="${4:-}" ca="${5:-ca}"
  ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/$name.key"
  ossl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr"
  {
    echo "basicConstraints = critical, CA:FALSE"
    echo "keyUsage = critical, digitalSignature, keyEncipherment"
    echo "extendedKeyUsage = $eku"
    echo "authorityKeyIdentifier = keyid"
    [[ -n "$san" ]] && echo "subjectAltName = $san"
  } >"$pki/$name.ext"
  ossl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -extfile "$pki/$name.ext" \
    -out "$pki/$name.crt"
  rm -f "$pki/$name.csr"
}
issue apiserver "/CN=kube-apiserver" serverAuth \
  "IP:127.0.0.1, IP:$service_ip, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local"
issue admin "/O=system:masters/CN=llmdeploy-testenv-admin" clientAuth
issue kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
issue kube-scheduler "/CN=system:kube-scheduler" clientAuth
issue kwok "/O=system:masters/CN=kwok-controller" clientAuth
issue front-proxy-client "/CN=front-proxy-client" clientAuth "" front-proxy-ca
# Service-account token signing key pair.
ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key"
ossl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
chmod 600 "$pki"/*.key

# write_kubeconfig <file> <cert name> <user>: a self-contained kubeconfig (data inline).
write_kubeconfig() {
  local file="$1" cert="$2" user="$3"
  cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: llmdeploy-testenv
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$pki/$cert.crt")
    client-key-data: $(base64 -w0 "$pki/$cert.key")
contexts:
- name: llmdeploy-testenv
  context:
    cluster: llmdeploy-testenv
    user: $user
current-context: llmdeploy-testenv
EOF
  chmod 600 "$file.tmp"
  mv "$file.tmp" "$file"
}
for c in kube-controller-manager kube-scheduler kwok; do
  write_kubeconfig "$state_dir/$c.kubeconfig" "$c" "$c"
done
# The admin kubeconfig is written last, once the API server answers: its presence plus the
# pid files is what marks a usable control plane.

# The API server keeps an audit log of the operator's own requests (its ServiceAccount only),
# so tests and benchmarks can count what the operator asks for, request by request.
cat >"$state_dir/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
    users: ["system:serviceaccount:llmdeploy-system:llmdeploy"]
  - level: None
POLICY

# --- processes ---------------------------------------------------------------------------
# start <name> <args...>: runs $bin/<name> in its own session (so its pid is also its
# process group id, which down.sh kills as a whole), logging to logs/<name>.log.
start() {
  local name="$1" exe="$bin/$1"
  shift
  log "starting $name"
  # fd 9 (the lock) is closed so that the daemons do not hold the lock after up.sh exits.
  setsid "$exe" "$@" </dev/null >>"$state_dir/logs/$name.log" 2>&1 9>&- &
  local pid=$! deadline=$((SECONDS + 10))
  echo "$pid $exe" >"$state_dir/$name.pid"
  # Until the forked shell has exec'd the binary, /proc/<pid>/exe is still bash, and
  # owned_pid (which checks the binary) would take the component for dead.
  until owned_pid "$name" >/dev/null; do
    if ! pid_alive "$pid" || ((SECONDS >= deadline)); then
      log "$name did not start; see $state_dir/logs/$name.log"
      return 1
    fi
    sleep 0.05
  done
}

start etcd \
  --name=testenv \
  --data-dir="$state_dir/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" \
  --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:$peer_port" \
  --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
  --initial-cluster="testenv=http://127.0.0.1:$peer_port" \
  --unsafe-no-fsync=true \
  --log-level=warn
wait_for etcd curl -sf --noproxy '*' "http://127.0.0.1:$etcd_port/health"

start kube-apiserver \
  --etcd-servers="http://127.0.0.1:$etcd_port" \
  --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 \
  --secure-port="$api_port" \
  --tls-cert-file="$pki/apiserver.crt" \
  --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction \
  --service-cluster-ip-range="$service_cidr" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$pki/sa.pub" \
  --service-account-signing-key-file="$pki/sa.key" \
  --requestheader-client-ca-file="$pki/front-proxy-ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User \
  --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$pki/front-proxy-client.crt" \
  --proxy-client-key-file="$pki/front-proxy-client.key" \
  --allow-privileged=true \
  --endpoint-reconciler-type=none \
  --audit-policy-file="$state_dir/audit-policy.yaml" \
  --audit-log-path="$state_dir/logs/audit.log" \
  --audit-log-format=json \
  --audit-log-maxsize=200 \
  --audit-log-maxbackup=1 \
  --profiling=false
wait_for "kube-apiserver /readyz" curl -sf --noproxy '*' --cacert "$pki/ca.crt" \
  --cert "$pki/admin.crt" --key "$pki/admin.key" "https://127.0.0.1:$api_port/readyz"
write_kubeconfig "$kubeconfig" admin llmdeploy-testenv-admin

start kube-controller-manager \
  --kubeconfig="$state_dir/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig="$state_dir/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig="$state_dir/kube-controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="$kcm_port" \
  --leader-elect=false \
  --controllers='*' \
  --use-service-account-credentials=true \
  --root-ca-file="$pki/ca.crt" \
  --service-account-private-key-file="$pki/sa.key" \
  --cluster-signing-cert-file="$pki/ca.crt" \
  --cluster-signing-key-file="$pki/ca.key" \
  --service-cluster-ip-range="$service_cidr" \
  --flex-volume-plugin-dir="$state_dir/flexvolume" \
  --profiling=false

start kube-scheduler \
  --kubeconfig="$state_dir/kube-scheduler.kubeconfig" \
  --authentication-kubeconfig="$state_dir/kube-scheduler.kubeconfig" \
  --authorization-kubeconfig="$state_dir/kube-scheduler.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="$sched_port" \
  --leader-elect=false \
  --profiling=false

cp "$stages_file" "$state_dir/kwok-stages.yaml"
start kwok \
  --kubeconfig="$state_dir/kwok.kubeconfig" \
  --config="$state_dir/kwok-stages.yaml" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --node-ip=10.10.0.1 \
  --cidr="$pod_cidr" \
  --node-lease-duration-seconds=40

wait_for "kube-controller-manager /healthz" \
  curl -sfk --noproxy '*' "https://127.0.0.1:$kcm_port/healthz"
wait_for "kube-scheduler /healthz" curl -sfk --noproxy '*' "https://127.0.0.1:$sched_port/healthz"

apply_nodes
wait_nodes
# The service-account controller creating "default" shows the controller-manager works;
# pods cannot be created in a namespace before its default service account exists.
wait_for "default service account" kc get serviceaccount default -n default
api_ready || die "kube-apiserver /readyz is not ok"

trap - EXIT
log "control plane ready in ${SECONDS}s (state in $state_dir)"
echo "$kubeconfig"
