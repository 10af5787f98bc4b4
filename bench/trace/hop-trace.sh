#!/bin/bash
# Per-hop latency of `rim-bench latency`, from a loopback packet capture (needs tcpdump, root).
#
# Every pushed body carries `rimb` + its send time (Unix ns, hex); the capture sees it in the REST
# call to control, the produce request to the broker, the fetch response to the job (when lz4 left
# it readable), the job's request to the edge and the edge's write to the client. hops.py prints
# the time between consecutive hops; kafka.py the broker's time per request kind.
#
# usage: bench/trace/hop-trace.sh NAME [rim-bench latency options...]
# env:   BIN (default target/release), OUT (default /tmp/rim-hop-trace), SKIP (seconds of pushes to
#        leave out of hops.py, e.g. a warm-up)
set -euo pipefail
name=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-target/release}
OUT=${OUT:-/tmp/rim-hop-trace}
mkdir -p "$OUT"
"$BIN/rim-bench" latency "$@" > "$OUT/$name.txt" 2>&1 &
bench=$!
arg() { tr '\0' '\n' < "/proc/$1/cmdline" | grep -o "$2=[^ ]*" | head -1 | sed 's/.*://'; }
for _ in $(seq 1 120); do
  control=$(pgrep -f "rim control" | head -1 || true)
  edge=$(pgrep -f "rim edge" | head -1 || true)
  [ -n "$control" ] && [ -n "$edge" ] && break
  sleep 0.5
done
kafka=$(arg "$control" control-kafka-brokers)
ports="control=$(arg "$control" control-listen) kafka=$kafka edgein=$(arg "$edge" edge-internal-listen) edgetcp=$(arg "$edge" edge-tcp-listen)"
echo "$ports" > "$OUT/$name.ports"
tcpdump -i lo -s 0 -w "$OUT/$name.pcap" \
  "tcp port $(arg "$control" control-listen) or tcp port $kafka or tcp port $(arg "$edge" edge-internal-listen) or tcp src port $(arg "$edge" edge-tcp-listen)" \
  > /dev/null 2>&1 &
dump=$!
wait $bench || true
kill $dump; sleep 1
python3 "$here/hops.py" "$OUT/$name.pcap" $ports
python3 "$here/kafka.py" "$OUT/$name.pcap" "$kafka"
grep -E "latency p50|pushes/s" "$OUT/$name.txt"
