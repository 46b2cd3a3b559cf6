#!/usr/bin/python3
"""Summarise a coz profile (profile.coz) as a table, the way coz's viewer
reads it: for each selected place, how much the program's throughput at a
progress point changed when that place was virtually sped up.

usage: coz_summary.py [--by line|file] [--point NAME] profile.coz [more.coz]

Each experiment virtually speeds one source line up by `speedup` (0..1) for
`duration` ns and counts progress-point visits (`delta`).  The throughput of
an experiment is delta/duration; the baseline is the mean throughput of the
experiments with speedup 0 (all places pooled, or the place's own when it has
at least two).  A place's effect is the least-squares slope of
  program speedup = throughput/baseline - 1   against   line speedup,
through the origin: 1.0 means "speeding this up by x speeds the program up by
x"; near 0, or negative, means optimising it would not help (the flat profile
would still show it busy)."""
import sys
from collections import defaultdict


def parse(paths, point):
    exps = []
    cur = None
    for path in paths:
        for line in open(path):
            f = line.rstrip('\n').split('\t')
            kv = dict(x.split('=', 1) for x in f[1:] if '=' in x)
            if f[0] == 'experiment':
                cur = {'place': kv['selected'], 'speedup': float(kv['speedup']),
                       'duration': int(kv['duration']), 'delta': None}
                exps.append(cur)
            elif f[0] == 'throughput-point' and cur is not None:
                if point is None or kv.get('name') == point:
                    cur['delta'] = (cur['delta'] or 0) + int(kv['delta'])
    return [e for e in exps if e['delta'] is not None and e['duration'] > 0]


def main(argv):
    by, point, paths = 'line', None, []
    it = iter(argv)
    for a in it:
        if a == '--by':
            by = next(it)
        elif a == '--point':
            point = next(it)
        else:
            paths.append(a)
    if not paths:
        print(__doc__.split('\n\n')[1], file=sys.stderr)
        return 2
    exps = parse(paths, point)
    if not exps:
        print('no experiments with a throughput point: see doc/profiling.md',
              file=sys.stderr)
        return 1
    rate = lambda e: e['delta'] / e['duration']
    zero = [rate(e) for e in exps if e['speedup'] == 0]
    base_all = sum(zero) / len(zero) if zero else sum(map(rate, exps)) / len(exps)
    groups = defaultdict(list)
    for e in exps:
        place = e['place']
        if by == 'file':
            place = place.rsplit(':', 1)[0]
        groups[place].append(e)
    rows = []
    for place, es in groups.items():
        own0 = [rate(e) for e in es if e['speedup'] == 0]
        base = sum(own0) / len(own0) if len(own0) >= 2 else base_all
        xs = [e['speedup'] for e in es]
        ys = [rate(e) / base - 1 for e in es]
        sxx = sum(x * x for x in xs)
        slope = sum(x * y for x, y in zip(xs, ys)) / sxx if sxx else float('nan')
        rows.append((slope, place, len(es)))
    rows.sort(key=lambda r: (r[0] != r[0], -r[0] if r[0] == r[0] else 0))
    print('%d experiments, baseline %.1f progress/s%s' %
          (len(exps), base_all * 1e9, '' if point is None else ' at ' + point))
    print('%8s  %5s  %s' % ('effect', 'exps', 'place'))
    for slope, place, n in rows:
        s = '   n/a' if slope != slope else '%+8.2f' % slope
        print('%8s  %5d  %s' % (s, n, place))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
