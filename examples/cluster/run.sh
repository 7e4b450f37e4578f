#!/usr/bin/env bash
# Two bastion instances sharing one Redis, on this machine: the rate limit of the route
# holds across both of them.
#
#   examples/cluster/run.sh            start everything, print what to try, wait for Ctrl-C
#   examples/cluster/run.sh --burst N  start, send N requests split across both ports,
#                                      print how many each admitted, stop
#
# Needs redis-server, python3 and bastion. BASTION names the bastion command (default
# `bastion`; e.g. BASTION="python3 -m bastion"), PYTHON the Python (default python3).
# Everything lives in a temporary directory, removed at the end.
set -euo pipefail

read -r -a BASTION_CMD <<< "${BASTION:-bastion}"
PYTHON=${PYTHON:-python3}
LIMIT=10  # requests per minute, for both instances together
burst=""
if [[ "${1:-}" == "--burst" ]]; then
    burst=${2:-30}
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--burst N]" >&2
    exit 2
fi
command -v redis-server > /dev/null || { echo "redis-server not found (apt-get install redis-server)" >&2; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/bastion-cluster.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2> /dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# three free loopback ports: the backend and the two instances
read -r backend_port port1 port2 <<< "$("$PYTHON" - << 'PY'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
)"

# Redis on a Unix socket only (port 0: no TCP), nothing saved to disk
redis-server --port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 700 \
    --save "" --appendonly no --dir "$dir" > "$dir/redis.log" 2>&1 &
pids+=($!)

# the demo backend: a static directory served by Python
mkdir -p "$dir/www"
echo "hello from the backend" > "$dir/www/index.html"
"$PYTHON" -m http.server --bind 127.0.0.1 --directory "$dir/www" "$backend_port" \
    > "$dir/backend.log" 2>&1 &
pids+=($!)

for n in 1 2; do
    port_var="port$n"
    cat > "$dir/bastion-$n.yaml" << YAML
listen: {http: "127.0.0.1:${!port_var}"}
workers: 1
data_dir: "$dir/data-$n"
access_log: {format: "off"}
state:
  redis: "unix://$dir/redis.sock"
  instances: 2        # while Redis is unreachable, each instance admits half the limit
sites:
  - hosts: ["*"]
    routes:
      - path: /
        proxy: {upstreams: ["http://127.0.0.1:$backend_port"]}
        rate_limits:
          - {rate: $LIMIT/m, name: demo}
YAML
    "${BASTION_CMD[@]}" run -c "$dir/bastion-$n.yaml" > "$dir/bastion-$n.log" 2>&1 &
    pids+=($!)
done

# wait until both instances answer (a HEAD request does not count against the limit)
"$PYTHON" - "$port1" "$port2" "$backend_port" "$dir" << 'PY'
import socket, sys, time
deadline = time.monotonic() + 30
for port in sys.argv[1:4]:
    while True:
        try:
            socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"nothing answers on port {port}: see the logs in {sys.argv[4]}")
            time.sleep(0.1)
PY

if [[ -n "$burst" ]]; then
    "$PYTHON" - "$burst" "$port1" "$port2" << 'PY'
import sys, urllib.error, urllib.request
count, ports = int(sys.argv[1]), sys.argv[2:]
admitted = {port: 0 for port in ports}
refused = 0
for i in range(count):
    port = ports[i % 2]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as answer:
            admitted[port] += answer.status == 200
    except urllib.error.HTTPError as error:
        if error.code != 429:
            sys.exit(f"unexpected answer {error.code} from port {port}")
        refused += 1
total = sum(admitted.values())
print(f"admitted {total} of {count} "
      f"({', '.join(f'port {p}: {n}' for p, n in admitted.items())}), refused {refused}")
PY
    exit 0
fi

cat << TEXT
Two bastion instances share the rate limit of $LIMIT requests a minute through Redis:

  instance 1   http://127.0.0.1:$port1/
  instance 2   http://127.0.0.1:$port2/
  Redis        unix://$dir/redis.sock
  backend      http://127.0.0.1:$backend_port/

Try a burst split across both (10 admitted in total, then 429 on either port):

  for i in \$(seq 15); do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:$port1/; \\
    curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:$port2/; done; echo

The RateLimit field shows what is left, the same on both ports:

  curl -si http://127.0.0.1:$port2/ | grep -i ratelimit

Logs and configs: $dir (removed when this stops). Ctrl-C stops everything.
TEXT
wait
