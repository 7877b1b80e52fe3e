#!/usr/bin/env bash
# Load benchmark for the verifier (issue 4): one run, one load generator (wrk), loopback only.
#
# Measures side by side, with the same wrk settings:
#   upstream     the bare upstream (nginx `return 200` on a loopback port)
#   keyward      keyward verifier in proxy mode (--upstream) in front of it
#   keyward+audit  the same with the audit log on (--audit-log to a file in the work dir; AUDIT=0 leaves it out)
#   keyward-before the proxy of another build (KEYWARD_BIN_BEFORE, e.g. an older commit's release
#                binary), same flags and key set: a before/after pair measured in the same rounds,
#                so both see the same machine noise (only when KEYWARD_BIN_BEFORE is set)
#   nginx+auth   nginx auth_request -> keyward forward-auth /verify, then proxy_pass to the upstream
#   nginx        nginx proxy_pass to the upstream, no auth
#   caddy+auth   Caddy forward_auth -> keyward forward-auth /verify, then reverse_proxy to the upstream
#                (the Caddyfile docs/verifier.md documents; only when caddy is installed)
#   caddy        Caddy reverse_proxy to the upstream, no auth (only when caddy is installed)
# Every request carries a real token (`keyward token new`) of a real key set
# (`keyward keyset build`, KEYS records) as `Authorization: Bearer`; tokens are
# handed to wrk through its Lua script's environment and never printed.
#
# Prints a markdown table of medians over ROUNDS rounds (requests/s, p50, p99)
# and the ratios the issue asks for; then the paired latency probe
# (benches/paired_latency.rs): one keep-alive connection per setup, requests
# interleaved one by one so every setup sees the same machine noise, giving
# the latency each setup adds over the bare upstream at p50/p90/p99/p99.9.
#
# Needs: wrk, nginx (Debian: apt-get install wrk nginx-light), curl, cargo (for the
# release build; or set KEYWARD_BIN); caddy (apt-get install caddy) adds the two Caddy rows. Settings (environment): THREADS (2),
# CONNECTIONS (32), DURATION (10s), ROUNDS (3), KEYS (100000), PAIRED_REQUESTS (50000
# per setup; 0 skips the probe), LATENCY_DURATION (0: a wrk -c1 pass of that length
# when set). Everything stops by itself and is cleaned up.
set -euo pipefail

THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
KEYS=${KEYS:-100000}
LATENCY_DURATION=${LATENCY_DURATION:-0}
AUDIT=${AUDIT:-1}
PAIRED_REQUESTS=${PAIRED_REQUESTS:-50000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
NGINX=$(command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true)
[ -n "$NGINX" ] || missing+=(nginx-light)
command -v curl >/dev/null 2>&1 || missing+=(curl)
CADDY=$(command -v caddy 2>/dev/null || true)
[ -n "$CADDY" ] || echo "caddy not installed: the Caddy rows are left out (apt-get install caddy)" >&2
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]}; install with: apt-get install ${missing[*]}" >&2
  exit 2
fi

if [ -z "${KEYWARD_BIN:-}" ]; then
  echo "== cargo build --release" >&2
  (cd "$ROOT" && cargo build --release --locked --quiet)
  KEYWARD_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/keyward
fi
if [ "$PAIRED_REQUESTS" != 0 ]; then
  echo "== cargo bench --no-run --bench paired_latency" >&2
  (cd "$ROOT" && cargo bench --locked --quiet --no-run --bench paired_latency 2>/dev/null)
fi
[ -x "$KEYWARD_BIN" ] || { echo "no keyward binary at $KEYWARD_BIN" >&2; exit 2; }
if [ -n "${KEYWARD_BIN_BEFORE:-}" ] && [ ! -x "$KEYWARD_BIN_BEFORE" ]; then
  echo "no keyward binary at KEYWARD_BIN_BEFORE=$KEYWARD_BIN_BEFORE" >&2
  exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/keyward-load.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port, probed by connecting, from below the kernel's ephemeral range (where
# other programs' outgoing connections take their ports, so a probed-free port there can be
# taken before the server binds it): 10000 up to that range's start (32768 by default).
used_ports=" "
EPHEMERAL_START=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$EPHEMERAL_START" -gt 11000 ] 2>/dev/null || EPHEMERAL_START=32768
free_port() {
  local port
  for _ in $(seq 200); do
    port=$((10000 + RANDOM % (EPHEMERAL_START - 10000)))
    case "$used_ports" in *" $port "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      used_ports+="$port "
      echo "$port"
      return
    fi
  done
  echo "no free port found" >&2
  exit 1
}
UPSTREAM=$(free_port); PROXY=$(free_port); PROXY_ADMIN=$(free_port)
FWD=$(free_port); FWD_ADMIN=$(free_port); NGINX_AUTH=$(free_port); NGINX_PLAIN=$(free_port)
CADDY_AUTH=$(free_port); CADDY_PLAIN=$(free_port)
AUDIT_PROXY=$(free_port); AUDIT_ADMIN=$(free_port)
BEFORE_PROXY=$(free_port); BEFORE_ADMIN=$(free_port)

# --- the key set: KEYS-1 records with random hashes plus the one whose token wrk sends.
echo "== key set: $KEYS keys" >&2
TOKEN=$("$KEYWARD_BIN" token new)
HASH=$(printf '%s' "$TOKEN" | "$KEYWARD_BIN" token hash)
{
  printf '{"hash":"%s","name":"load-bench","scopes":["bench:read"],"notBefore":"2026-01-01T00:00:00Z","state":"active"}\n' "$HASH"
  head -c $((32 * (KEYS - 1))) /dev/urandom | od -An -v -tx1 | tr -d ' \n' | fold -w64 |
    awk '{ printf "{\"hash\":\"sha256:%s\",\"name\":\"filler-%07d\",\"scopes\":[\"bench:read\",\"other:write\"],\"notBefore\":\"2026-01-01T00:00:00Z\",\"state\":\"active\"}\n", $0, NR }'
} | "$KEYWARD_BIN" keyset build --name default --namespace bench --generation 1 --out "$WORK/keys" 2>"$WORK/build.log"

# --- processes
"$KEYWARD_BIN" verifier --keyset-dir "$WORK/keys" --listen "127.0.0.1:$PROXY" --admin-listen "127.0.0.1:$PROXY_ADMIN" \
  --upstream "http://127.0.0.1:$UPSTREAM" >"$WORK/proxy.log" 2>&1 &
PIDS+=($!)
if [ "$AUDIT" = 1 ]; then
  "$KEYWARD_BIN" verifier --keyset-dir "$WORK/keys" --listen "127.0.0.1:$AUDIT_PROXY" --admin-listen "127.0.0.1:$AUDIT_ADMIN" \
    --upstream "http://127.0.0.1:$UPSTREAM" --audit-log "$WORK/audit.jsonl" >"$WORK/proxy-audit.log" 2>&1 &
  PIDS+=($!)
fi
if [ -n "${KEYWARD_BIN_BEFORE:-}" ]; then
  "$KEYWARD_BIN_BEFORE" verifier --keyset-dir "$WORK/keys" --listen "127.0.0.1:$BEFORE_PROXY" \
    --admin-listen "127.0.0.1:$BEFORE_ADMIN" --upstream "http://127.0.0.1:$UPSTREAM" >"$WORK/proxy-before.log" 2>&1 &
  PIDS+=($!)
fi
"$KEYWARD_BIN" verifier --keyset-dir "$WORK/keys" --listen "127.0.0.1:$FWD" --admin-listen "127.0.0.1:$FWD_ADMIN" \
  >"$WORK/forward-auth.log" 2>&1 &
PIDS+=($!)

nginx_common() {
  local d=$1
  cat <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $d/body;
  proxy_temp_path $d/proxy;
  fastcgi_temp_path $d/fastcgi;
  uwsgi_temp_path $d/uwsgi;
  scgi_temp_path $d/scgi;
  keepalive_requests 1000000;
EOF
}

# The upstream: its own nginx, so the front nginx does not share a worker with it.
mkdir -p "$WORK/up" "$WORK/front"
{
  nginx_common "$WORK/up"
  cat <<EOF
  server { listen 127.0.0.1:$UPSTREAM; location / { return 200 "ok\n"; } }
}
EOF
} >"$WORK/up/nginx.conf"

# The front: auth_request as docs/verifier.md documents it, and plain proxy_pass.
{
  nginx_common "$WORK/front"
  cat <<EOF
  upstream app { server 127.0.0.1:$UPSTREAM; keepalive 64; }
  upstream keyward { server 127.0.0.1:$FWD; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_AUTH;
    location / {
      auth_request /_keyward;
      auth_request_set \$keyward_key_id \$upstream_http_x_keyward_key_id;
      auth_request_set \$keyward_scopes \$upstream_http_x_keyward_scopes;
      proxy_set_header Authorization "";
      proxy_set_header X-Keyward-Key-Id \$keyward_key_id;
      proxy_set_header X-Keyward-Scopes \$keyward_scopes;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://app;
    }
    location = /_keyward {
      internal;
      proxy_pass http://keyward/verify;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-Method \$request_method;
      proxy_set_header X-Original-URI \$request_uri;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  server {
    listen 127.0.0.1:$NGINX_PLAIN;
    location / {
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://app;
    }
  }
}
EOF
} >"$WORK/front/nginx.conf"
"$NGINX" -p "$WORK/up" -c "$WORK/up/nginx.conf" 2>>"$WORK/up/stderr" &
PIDS+=($!)
"$NGINX" -p "$WORK/front" -c "$WORK/front/nginx.conf" 2>>"$WORK/front/stderr" &
PIDS+=($!)

# Caddy: forward_auth as docs/verifier.md documents it, and plain reverse_proxy.
if [ -n "$CADDY" ]; then
  mkdir -p "$WORK/caddy"
  cat >"$WORK/caddy/Caddyfile" <<EOF
{
  admin off
  auto_https off
}
http://:$CADDY_AUTH {
  bind 127.0.0.1
  route {
    request_header -X-Keyward-Key-Id
    request_header -X-Keyward-Scopes
    forward_auth 127.0.0.1:$FWD {
      uri /verify
      copy_headers X-Keyward-Key-Id X-Keyward-Scopes
    }
    reverse_proxy 127.0.0.1:$UPSTREAM {
      header_up -Authorization
    }
  }
}
http://:$CADDY_PLAIN {
  bind 127.0.0.1
  reverse_proxy 127.0.0.1:$UPSTREAM
}
EOF
  XDG_CONFIG_HOME="$WORK/caddy" XDG_DATA_HOME="$WORK/caddy" HOME="$WORK/caddy" \
    "$CADDY" run --adapter caddyfile --config "$WORK/caddy/Caddyfile" >"$WORK/caddy/caddy.log" 2>&1 &
  PIDS+=($!)
fi

# --- wait (bounded) until everything answers, and check that auth is really on.
export KW_TOKEN=$TOKEN
unset TOKEN
status() { # url [with-token]
  if [ "${2:-}" = token ]; then
    curl -s -o /dev/null -w '%{http_code}' -H @- "$1" <<<"Authorization: Bearer $KW_TOKEN" || true
  else
    curl -s -o /dev/null -w '%{http_code}' "$1" || true
  fi
}
for _ in $(seq 300); do
  if [ "$(status "http://127.0.0.1:$PROXY_ADMIN/readyz")" = 200 ] && [ "$(status "http://127.0.0.1:$FWD_ADMIN/readyz")" = 200 ] &&
    [ "$(status "http://127.0.0.1:$UPSTREAM/")" = 200 ] && [ "$(status "http://127.0.0.1:$NGINX_PLAIN/")" = 200 ] &&
    { [ "$AUDIT" != 1 ] || [ "$(status "http://127.0.0.1:$AUDIT_ADMIN/readyz")" = 200 ]; } &&
    { [ -z "${KEYWARD_BIN_BEFORE:-}" ] || [ "$(status "http://127.0.0.1:$BEFORE_ADMIN/readyz")" = 200 ]; } &&
    { [ -z "$CADDY" ] || [ "$(status "http://127.0.0.1:$CADDY_PLAIN/")" = 200 ]; }; then
    break
  fi
  sleep 0.1
done
PATH_=/bench/1
NAMES=(upstream keyward nginx+auth nginx)
PORTS=("$UPSTREAM" "$PROXY" "$NGINX_AUTH" "$NGINX_PLAIN")
AUTH_PORTS=("$PROXY" "$NGINX_AUTH")
if [ "$AUDIT" = 1 ]; then
  NAMES+=(keyward+audit)
  PORTS+=("$AUDIT_PROXY")
  AUTH_PORTS+=("$AUDIT_PROXY")
fi
if [ -n "${KEYWARD_BIN_BEFORE:-}" ]; then
  NAMES+=(keyward-before)
  PORTS+=("$BEFORE_PROXY")
  AUTH_PORTS+=("$BEFORE_PROXY")
fi
if [ -n "$CADDY" ]; then
  NAMES+=(caddy+auth caddy)
  PORTS+=("$CADDY_AUTH" "$CADDY_PLAIN")
  AUTH_PORTS+=("$CADDY_AUTH")
fi
for url in "${PORTS[@]}"; do
  got=$(status "http://127.0.0.1:$url$PATH_" token)
  if [ "$got" != 200 ]; then
    echo "setup check failed: 127.0.0.1:$url$PATH_ with the token answered $got" >&2
    tail -n 5 "$WORK"/*.log "$WORK"/*/error.log "$WORK"/caddy/caddy.log >&2 || true
    exit 1
  fi
done
for url in "${AUTH_PORTS[@]}"; do
  got=$(status "http://127.0.0.1:$url$PATH_")
  [ "$got" = 401 ] || { echo "setup check failed: 127.0.0.1:$url without a token answered $got, not 401" >&2; exit 1; }
done

# wrk reports latencies in microseconds through its Lua done() hook; errors count non-2xx too.
cat >"$WORK/report.lua" <<'EOF'
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KW_TOKEN")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.1f %d %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
EOF

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# run_pass LABEL THREADS CONNECTIONS DURATION: ROUNDS rounds, the setups interleaved in each.
run_pass() {
  local label=$1 t=$2 c=$3 d=$4 round i line
  : >"$WORK/results.$label"
  for round in $(seq "$ROUNDS"); do
    for i in "${!NAMES[@]}"; do
      echo "== $label round $round/$ROUNDS: ${NAMES[$i]}" >&2
      line=$(wrk -t"$t" -c"$c" -d"$d" --timeout 2s -s "$WORK/report.lua" "http://127.0.0.1:${PORTS[$i]}$PATH_" | grep '^RESULT')
      echo "${NAMES[$i]} ${line#RESULT }" >>"$WORK/results.$label"
    done
  done
}

# table LABEL: medians per setup, and the ratios.
table() {
  local label=$1 name rps p50 p99 err
  declare -gA RPS P50 P99
  echo "| setup | requests/s | p50 (µs) | p99 (µs) | errors (all rounds) |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  for name in "${NAMES[@]}"; do
    rps=$(awk -v n="$name" '$1 == n { print $2 }' "$WORK/results.$label" | median)
    p50=$(awk -v n="$name" '$1 == n { print $3 }' "$WORK/results.$label" | median)
    p99=$(awk -v n="$name" '$1 == n { print $4 }' "$WORK/results.$label" | median)
    err=$(awk -v n="$name" '$1 == n { s += $5 } END { print s + 0 }' "$WORK/results.$label")
    RPS[$name]=$rps; P50[$name]=$p50; P99[$name]=$p99
    printf '| %s | %.0f | %.0f | %.0f | %s |\n' "$name" "$rps" "$p50" "$p99" "$err"
  done
  echo
  awk -v a="${P99[keyward]}" -v b="${P99[upstream]}" -v c="${P50[keyward]}" -v d="${P50[upstream]}" \
    'BEGIN { printf "- keyward proxy adds %.0f µs at p99 and %.0f µs at p50 over the bare upstream (aim: ≤ 50 µs at p99)\n", a - b, c - d }'
  awk -v a="${RPS[keyward]}" -v b="${RPS[nginx+auth]}" \
    'BEGIN { printf "- keyward proxy throughput is %.2fx the nginx auth_request setup (aim: ≥ 3x)\n", a / b }'
  awk -v a="${RPS[nginx]}" -v b="${RPS[nginx+auth]}" -v c="${RPS[keyward]}" \
    'BEGIN { printf "- nginx proxy_pass alone: %.2fx the auth_request setup; keyward proxy is %.2fx nginx proxy_pass\n", a / b, c / a }'
  if [ -n "${RPS[keyward+audit]:-}" ]; then
    awk -v a="${RPS[keyward+audit]}" -v b="${RPS[keyward]}" -v c="${P99[keyward+audit]}" -v d="${P99[keyward]}" -v e="${P50[keyward+audit]}" -v f="${P50[keyward]}" \
      'BEGIN { printf "- audit log on: %.3fx the throughput of the proxy without it; %+.0f µs at p50, %+.0f µs at p99\n", a / b, e - f, c - d }'
  fi
  if [ -n "${RPS[keyward-before]:-}" ]; then
    awk -v a="${RPS[keyward]}" -v b="${RPS[keyward-before]}" -v c="${P50[keyward]}" -v d="${P50[keyward-before]}" -v e="${P99[keyward]}" -v f="${P99[keyward-before]}" \
      'BEGIN { printf "- this build vs KEYWARD_BIN_BEFORE: %.3fx the throughput; %+.0f µs at p50, %+.0f µs at p99\n", a / b, c - d, e - f }'
  fi
  if [ -n "${RPS[caddy+auth]:-}" ]; then
    awk -v a="${RPS[keyward]}" -v b="${RPS[caddy+auth]}" -v c="${RPS[caddy]}" -v d="${P50[caddy+auth]}" -v e="${P50[caddy]}" \
      'BEGIN { printf "- keyward proxy throughput is %.2fx the Caddy forward_auth setup; Caddy reverse_proxy alone is %.2fx its forward_auth setup; forward_auth adds %.0f µs at p50\n", a / b, c / b, d - e }'
  fi
}

run_pass loaded "$THREADS" "$CONNECTIONS" "$DURATION"
if [ "$LATENCY_DURATION" != 0 ] && [ "$LATENCY_DURATION" != 0s ]; then
  run_pass unloaded 1 1 "$LATENCY_DURATION"
fi

echo
echo "### Verifier load, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores; $KEYS keys; medians of $ROUNDS rounds"
echo
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, GET $PATH_ with a valid token:"
echo
table loaded
if [ -s "$WORK/results.unloaded" ]; then
  echo
  echo "wrk -t1 -c1 -d$LATENCY_DURATION (one connection: latency without queueing):"
  echo
  table unloaded
fi
if [ "$AUDIT" = 1 ]; then
  audit_metrics=$(curl -s "http://127.0.0.1:$AUDIT_ADMIN/metrics")
  written=$(awk '$1 == "keyward_verifier_audit_lines_written_total" { print $2 }' <<<"$audit_metrics")
  dropped=$(awk '$1 == "keyward_verifier_audit_lines_dropped_total" { print $2 }' <<<"$audit_metrics")
  echo "- audit log: $written lines written, $dropped dropped, $(du -h "$WORK/audit.jsonl" | cut -f1) on disk"
fi
if [ "$PAIRED_REQUESTS" != 0 ]; then
  echo "== paired latency probe: $PAIRED_REQUESTS requests per setup" >&2
  echo
  echo "Paired latency (benches/paired_latency.rs), no other load:"
  echo
  (cd "$ROOT" && PAIRED_REQUESTS=$PAIRED_REQUESTS cargo bench --locked --quiet --bench paired_latency -- \
    $(for i in "${!NAMES[@]}"; do echo "${NAMES[$i]}=127.0.0.1:${PORTS[$i]}"; done))
fi
