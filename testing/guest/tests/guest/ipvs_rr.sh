#!/bin/bash
# Run in the guest by tests/ipvs.rs (never on the host: it makes links, addresses and IPVS
# services in the network namespace it starts in, which in the guest is the guest kernel's own).
#
# Two servers in their own namespaces (10.0.0.2 and 10.0.0.6, one veth pair each), a virtual
# service 10.0.0.100:80 on a dummy link of the guest's root namespace, IPVS round robin with
# masquerading to both, then requests from the root namespace: each reply names its server.
# Every wait and request is bounded.
set -euo pipefail
VIP=10.0.0.100
REQUESTS=${1:-6}
# progress on stderr, stamped with the guest's uptime
step() { echo "$(cut -d" " -f1 /proc/uptime)s $*" >&2; }

step modules

modprobe ip_vs
modprobe ip_vs_rr
modprobe veth
modprobe dummy

ip link add kpvip0 type dummy
ip addr add $VIP/32 dev kpvip0
ip link set kpvip0 up

step links and servers
RESPONDER='
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 80))
s.listen(16)
body = (sys.argv[2] + "\n").encode()
while True:
    c, _ = s.accept()
    c.settimeout(2)
    try:
        c.recv(4096)
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    except OSError:
        pass
    c.close()
'
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT

for i in 1 2; do
  ns=srv$i
  host=10.0.0.$((4 * i - 3)) # 10.0.0.1, 10.0.0.5
  addr=10.0.0.$((4 * i - 2)) # 10.0.0.2, 10.0.0.6
  ip netns add $ns
  ip link add veth$i type veth peer name eth0 netns $ns
  ip addr add $host/30 dev veth$i
  ip link set veth$i up
  ip -n $ns addr add $addr/30 dev eth0
  ip -n $ns link set lo up
  ip -n $ns link set eth0 up
  ip -n $ns route add default via $host
  # a minimal HTTP responder that names its server (python3 -S: no site imports, a fast start)
  ip netns exec $ns python3 -S -c "$RESPONDER" $addr $ns >"$TMPDIR/$ns.log" 2>&1 &
  pids+=($!)
done

step ipvs
ipvsadm -A -t $VIP:80 -s rr
ipvsadm -a -t $VIP:80 -r 10.0.0.2:80 -m
ipvsadm -a -t $VIP:80 -r 10.0.0.6:80 -m

step waiting for the servers
# wait (bounded) until both servers answer directly
for addr in 10.0.0.2 10.0.0.6; do
  for _ in $(seq 50); do
    curl -s --max-time 1 -o /dev/null http://$addr/who && continue 2
    sleep 0.1
  done
  echo "server $addr did not come up" >&2
  cat "$TMPDIR"/srv*.log >&2
  exit 1
done

step requests
for n in $(seq "$REQUESTS"); do
  echo "reply $n: $(curl -s --max-time 2 http://$VIP/who || echo FAILED)"
done
step done
# for the log only: the counters lag (the estimator folds them in every 2 s)
ipvsadm -Ln --stats
