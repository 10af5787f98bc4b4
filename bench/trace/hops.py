#!/usr/bin/env python3
"""Per-hop latency from a loopback capture of `rim-bench latency` (see hop-trace.sh).

usage: hops.py CAPTURE control=PORT kafka=PORT edgein=PORT edgetcp=PORT
env:   SKIP=seconds  leave out pushes sent in the first SKIP seconds
       LAST=n        only the last n pushes sent (the measured phase after a warm-up)
       SERIES=1      also print end-to-end p50/max per half second of send time

Also prints what the job's requests to the edge carried: pushes per request, and for room pushes
the runs of consecutive pushes to one room (what the edge queues as one frame per connection: an
op-9 message over WebSocket, the packets back to back over TCP); and how many deliveries each TCP
segment from the edge to its clients held (about one write each on loopback).
"""
import collections
import os
import re
import struct
import sys

STAMP = re.compile(rb'rimb([0-9a-f]{16})')
ROOM = re.compile(rb'live://[A-Za-z0-9_.-]+')


def packets(path):
    """(time ns, source port, destination port, TCP payload) of every IPv4 TCP packet."""
    with open(path, 'rb') as capture:
        header = capture.read(24)
        nano = struct.unpack('<I', header[:4])[0] == 0xa1b23c4d
        link = struct.unpack('<I', header[20:24])[0]
        while True:
            record = capture.read(16)
            if len(record) < 16:
                return
            seconds, fraction, length, _ = struct.unpack('<IIII', record)
            data = capture.read(length)
            ip = data[14 if link == 1 else 16:]
            if len(ip) < 20 or ip[0] >> 4 != 4:
                continue
            tcp = ip[(ip[0] & 15) * 4:]
            if len(tcp) < 20:
                continue
            source, destination = struct.unpack('>HH', tcp[:4])
            when = seconds * 1_000_000_000 + (fraction if nano else fraction * 1000)
            yield when, source, destination, tcp[(tcp[12] >> 4) * 4:]


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else float('nan')


def line(name, values):
    print(f'{name:30s} n={len(values):6d} p50 {percentile(values, .5):8.2f} '
          f'p90 {percentile(values, .9):8.2f} p99 {percentile(values, .99):8.2f} '
          f'max {percentile(values, 1):8.2f}')


def main():
    path = sys.argv[1]
    ports = {key: int(value) for key, value in (arg.split('=') for arg in sys.argv[2:])}
    first = collections.defaultdict(dict)  # send time -> hop -> first time seen
    to_edge = collections.defaultdict(bytearray)  # job -> edge bytes per source port
    segments = deliveries = 0  # edge -> client: TCP segments with data, and stamps in them
    for when, source, destination, payload in packets(path):
        if not payload:
            continue
        if destination == ports['edgein']:
            to_edge[source] += payload
        if source == ports['edgetcp']:
            segments += 1
            deliveries += payload.count(b'rimb')
        if destination == ports['control']:
            hop = '1 rest -> control'
        elif destination == ports['kafka']:
            hop = '2 control -> broker (produce)'
        elif source == ports['kafka']:
            hop = '3 broker -> job (fetch)'
        elif destination == ports['edgein']:
            hop = '4 job -> edge'
        elif source == ports['edgetcp']:
            hop = '5 edge -> client'
        else:
            continue
        for match in STAMP.finditer(payload):
            first[int(match.group(1), 16)].setdefault(hop, when)
    skip = float(os.environ.get('SKIP', '0'))
    if skip and first:
        start = min(first)
        first = {sent: seen for sent, seen in first.items() if sent - start >= skip * 1e9}
    last = int(os.environ.get('LAST', '0'))
    if last:
        first = dict(sorted(first.items())[-last:])
    hops = sorted({hop for seen in first.values() for hop in seen})
    print(f'{len(first)} pushes; each hop: ms since the previous one was seen '
          '(the broker hops only where lz4 left the stamp readable)')
    previous = None
    for hop in hops:
        values = []
        for sent, seen in first.items():
            base = sent if previous is None else seen.get(previous)
            if hop in seen and base is not None:
                values.append((seen[hop] - base) / 1e6)
        line(hop, values)
        previous = hop
    if hops:
        last = hops[-1]
        line('total (send -> last hop)',
             [(seen[last] - sent) / 1e6 for sent, seen in first.items() if last in seen])
    edge_requests(to_edge, set(first))
    if segments:
        print(f'edge -> client: {segments} segments for {deliveries} deliveries = '
              f'{deliveries / segments:.2f} deliveries per segment (whole capture)')
    if os.environ.get('SERIES') and hops:
        start = min(first)
        buckets = collections.defaultdict(list)
        for sent, seen in first.items():
            if hops[-1] in seen:
                buckets[int((sent - start) / 5e8) / 2].append((seen[hops[-1]] - sent) / 1e6)
        for bucket in sorted(buckets):
            values = buckets[bucket]
            print(f'{bucket:5.1f} s: n={len(values):5d} p50 {percentile(values, .5):8.1f} '
                  f'max {max(values):8.1f}')


def edge_requests(streams, kept):
    """Pushes per job -> edge request, and runs of one room in them (requests of kept pushes)."""
    pushes, runs = [], []
    for data in streams.values():
        for request in bytes(data).split(b'POST ')[1:]:
            stamps = [int(m.group(1), 16) for m in STAMP.finditer(request)]
            if not stamps or not any(stamp in kept for stamp in stamps):
                continue
            pushes.append(len(stamps))
            rooms = ROOM.findall(request)
            if rooms:
                runs.append(1 + sum(1 for a, b in zip(rooms, rooms[1:]) if a != b))
    if not pushes:
        return
    print(f'job -> edge: {len(pushes)} requests for {sum(pushes)} pushes: '
          f'{sum(pushes) / len(pushes):.2f} per request (p50 {percentile(pushes, .5)}, '
          f'max {max(pushes)})')
    if runs:
        print(f'  room pushes: {sum(runs)} runs of one room in {len(runs)} requests = '
              f'{sum(pushes) / sum(runs):.2f} pushes per run (per op-9 frame at best)')


if __name__ == '__main__':
    main()
