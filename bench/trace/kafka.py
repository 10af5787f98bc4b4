#!/usr/bin/env python3
"""Broker time per Kafka request kind and client connection, from a loopback capture.

usage: kafka.py CAPTURE BROKER_PORT
Requests are matched to responses by connection and correlation id; only requests that start a
TCP segment are seen (all of librdkafka's small ones).
"""
import collections
import struct
import sys

from hops import packets, percentile

API = {0: 'Produce', 1: 'Fetch', 2: 'ListOffsets', 3: 'Metadata', 8: 'OffsetCommit',
       9: 'OffsetFetch', 10: 'FindCoordinator', 11: 'JoinGroup', 12: 'Heartbeat',
       13: 'LeaveGroup', 14: 'SyncGroup', 18: 'ApiVersions', 19: 'CreateTopics',
       22: 'InitProducerId'}


def main():
    path, broker = sys.argv[1], int(sys.argv[2])
    pending = {}
    times = collections.defaultdict(list)
    for when, source, destination, payload in packets(path):
        if len(payload) < 12:
            continue
        if destination == broker:
            size, api, version, correlation = struct.unpack('>ihhi', payload[:12])
            if api in API and 0 <= version < 20 and size >= 8:
                pending[(source, correlation)] = (when, api)
        elif source == broker:
            correlation = struct.unpack('>i', payload[4:8])[0]
            started = pending.pop((destination, correlation), None)
            if started:
                times[(destination, API[started[1]])].append((when - started[0]) / 1e6)
    for (port, api), values in sorted(times.items()):
        print(f'client port {port:5d} {api:15s} n={len(values):6d} '
              f'p50 {percentile(values, .5):7.2f} p90 {percentile(values, .9):7.2f} '
              f'p99 {percentile(values, .99):7.2f} max {max(values):7.2f} ms')


if __name__ == '__main__':
    main()
