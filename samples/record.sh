#!/usr/bin/env bash
# Records the bundled sample captures from real Linux TCP traffic between network
# namespaces, then their tshark truth. Needs root, iproute2, iptables, ethtool, tcpdump,
# dumpcap and tshark (`cargo xtask setup` installs them). Rerun it to refresh the samples;
# loss is random, so afterwards regenerate the golden files:
#   UPDATE_GOLDEN=1 cargo test -p tcpviz --test samples
#
#   client ns (tvzA) 10.88.1.1 fd88:1::1 --vethA/vethRA-- router ns (tvzR) --vethRB/vethB-- server ns (tvzB) 10.88.2.2 fd88:2::2
#
# Loss is injected in the router's FORWARD chain (iptables statistic): a drop in the
# sender's own OUTPUT chain is reported to TCP, which resends at once, so no loss would show.
set -euo pipefail
OUT=$(cd "$(dirname "$0")" && pwd)
A=tvzA R=tvzR B=tvzB

cleanup() {
  for ns in $A $R $B; do
    ip netns pids $ns 2>/dev/null | xargs -r kill 2>/dev/null || true
  done
  sleep 0.3
  for ns in $A $R $B; do ip netns del $ns 2>/dev/null || true; done
}
trap cleanup EXIT

setup() {
  cleanup
  for ns in $A $R $B; do ip netns add $ns; ip -n $ns link set lo up; done
  ip link add vethA type veth peer name vethRA
  ip link add vethB type veth peer name vethRB
  ip link set vethA netns $A; ip link set vethRA netns $R
  ip link set vethB netns $B; ip link set vethRB netns $R
  ip -n $A addr add 10.88.1.1/24 dev vethA; ip -n $R addr add 10.88.1.254/24 dev vethRA
  ip -n $B addr add 10.88.2.2/24 dev vethB; ip -n $R addr add 10.88.2.254/24 dev vethRB
  ip -n $A addr add fd88:1::1/64 dev vethA nodad; ip -n $R addr add fd88:1::fe/64 dev vethRA nodad
  ip -n $B addr add fd88:2::2/64 dev vethB nodad; ip -n $R addr add fd88:2::fe/64 dev vethRB nodad
  for l in "$A vethA" "$R vethRA" "$R vethRB" "$B vethB"; do
    set -- $l
    ip -n "$1" link set "$2" up
    # MTU-sized segments on the wire: no TSO/GSO/GRO super-packets.
    ip netns exec "$1" ethtool -K "$2" tso off gso off gro off tx off rx off >/dev/null 2>&1 || true
  done
  ip -n $A route add default via 10.88.1.254; ip -n $B route add default via 10.88.2.254
  ip -n $A -6 route add default via fd88:1::fe; ip -n $B -6 route add default via fd88:2::fe
  ip netns exec $R sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
  sleep 1
}

# drop PROBABILITY PORT: drop that share of data segments (>= 1000 bytes) to PORT in the router
drop() {
  ip netns exec $R iptables -A FORWARD -p tcp --dport "$2" -m length --length 1000:65535 \
    -m statistic --mode random --probability "$1" -j DROP
  ip netns exec $R ip6tables -A FORWARD -p tcp --dport "$2" -m length --length 1000:65535 \
    -m statistic --mode random --probability "$1" -j DROP
}

# server ADDR PORT [RCVBUF READ_BYTES READ_PAUSE]: accept one connection and read it all
server() {
  ip netns exec $B python3 - "$@" <<'PY' &
import socket, sys, time
addr, port = sys.argv[1], int(sys.argv[2])
rcvbuf = int(sys.argv[3]) if len(sys.argv) > 3 else 0
chunk = int(sys.argv[4]) if len(sys.argv) > 4 else 65536
pause = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if rcvbuf:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
s.bind((addr, port)); s.listen(1)
c, _ = s.accept()
while True:
    if pause:
        time.sleep(pause)
    if not c.recv(chunk):
        break
c.close()
PY
  sleep 0.5
}

# client ADDR PORT BYTES: send BYTES and close
client() {
  ip netns exec $A python3 - "$@" <<'PY'
import socket, sys
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((addr, port), timeout=30)
s.sendall(b"tcpviz sample " * (n // 14))
s.shutdown(socket.SHUT_WR)
s.recv(1)
s.close()
PY
}

# capture NS IFACE FILE SNAPLEN FILTER [dumpcap]: start a capture, remember its pid
capture() {
  if [ "${6:-}" = dumpcap ]; then
    ip netns exec "$1" dumpcap -q -i "$2" -s "$4" -f "$5" -w "$3" 2>/dev/null &
  else
    ip netns exec "$1" tcpdump -i "$2" -s "$4" -U --immediate-mode -w "$3" "$5" 2>/dev/null &
  fi
  CAP=$!
  sleep 1
}
stop_capture() { sleep 0.5; kill -INT $CAP; wait $CAP 2>/dev/null || true; }

# 1) IPv4 bulk transfer, 2% of data segments lost in the router, seen at the sender:
#    retransmissions, fast retransmissions, duplicate ACKs, timeouts.
setup; drop 0.02 5001
server 10.88.2.2 5001
capture $A vethA "$OUT/ipv4_loss_sender.pcap" 128 "tcp port 5001"
client 10.88.2.2 5001 1500000
stop_capture

# 2) IPv6 bulk transfer, 2% loss, seen at the receiver (after the loss), as pcapng written
#    by dumpcap: lost segments, out-of-order and retransmitted fill-ins.
setup; drop 0.02 5002
server fd88:2::2 5002
capture $B vethB "$OUT/ipv6_loss_receiver.pcapng" 128 "tcp port 5002" dumpcap
client fd88:2::2 5002 1500000
stop_capture

# 3) Zero window: a receiver with a 4 KiB buffer reading 2 KiB every 200 ms (IPv4).
setup
server 10.88.2.2 5003 4096 2048 0.2
capture $A vethA "$OUT/zero_window.pcap" 128 "tcp port 5003"
client 10.88.2.2 5003 120000
stop_capture

# 4) Handshake failures: a refused connection (nothing listens: RST) and a connection
#    whose SYNs are dropped by the router (SYN retransmissions, never answered).
setup
ip netns exec $R iptables -A FORWARD -p tcp --dport 5005 --syn -j DROP
ip netns exec $A sysctl -qw net.ipv4.tcp_syn_retries=2
capture $A vethA "$OUT/handshake_failures.pcap" 128 "tcp port 5004 or tcp port 5005"
ip netns exec $A python3 - <<'PY'
import socket
for port, wait in ((5004, 2), (5005, 8)):
    try:
        socket.create_connection(("10.88.2.2", port), timeout=wait).close()
    except OSError as e:
        print(f"port {port}: {e}")
PY
sleep 2
stop_capture

# Ground truth from tshark (the same command as the shared corpus uses).
FIELDS="-e frame.number -e frame.time_epoch -e frame.len -e frame.cap_len -e ip.src -e ip.dst -e ipv6.src -e ipv6.dst -e tcp.srcport -e tcp.dstport -e tcp.stream -e tcp.seq_raw -e tcp.ack_raw -e tcp.len -e tcp.flags -e tcp.window_size_value -e tcp.window_size -e tcp.analysis.ack_rtt -e tcp.analysis.initial_rtt -e tcp.analysis.retransmission -e tcp.analysis.fast_retransmission -e tcp.analysis.spurious_retransmission -e tcp.analysis.out_of_order -e tcp.analysis.lost_segment -e tcp.analysis.duplicate_ack -e tcp.analysis.zero_window -e tcp.analysis.ack_lost_segment -e tcp.analysis.zero_window_probe -e tcp.analysis.keep_alive -e tcp.analysis.window_full"
FILTER='tcp.analysis.retransmission || tcp.analysis.fast_retransmission || tcp.analysis.spurious_retransmission || tcp.analysis.out_of_order || tcp.analysis.lost_segment || tcp.analysis.duplicate_ack || tcp.analysis.zero_window'
for f in "$OUT"/*.pcap "$OUT"/*.pcapng; do
  # shellcheck disable=SC2086
  tshark -n -r "$f" -Y "$FILTER" -T fields -E header=y -E separator=, -E quote=d -E occurrence=l $FIELDS \
    > "$f.flagged.csv" 2>/dev/null
done
tshark --version | head -1 > "$OUT/TSHARK_VERSION"
ls -la "$OUT"
