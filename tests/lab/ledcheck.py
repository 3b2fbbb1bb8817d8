"""Measuring a sampled LED line, shared by tests/lab/led-test.sh (roomcast led-test on gpio-sim)
and tests/lab/led-states-test.sh (roomcast run following the supervisor's status).

The VM's sampler (linesample.c) writes one file per line and window: "START <value>", then
"EDGE <t_us> <value> <prev_us>" for each change (it happened in (prev, t]), then
"END <t_us> <value> ... gap=<us>" (the longest gap between two samples).

A step's length is checked against the interval the sampler can vouch for: between two edges, the
true length lies in [rise.prev .. fall.t] minus/plus the other edge's uncertainty, so a stalled
sampler widens the interval instead of failing the test. What remains is roomcast's own lateness:
its thread's wake-up latency, which under TCG on a host shared with builds is occasionally tens of
ms (a stalled vCPU). The generator keeps its phase, so a late step is followed by a short one and
the period stays exact: hence most steps within SEG_TOL_MS, every step within SEG_MAX_MS.
"""
from __future__ import annotations

import os

SEG_TOL_MS = 15
SEG_SHARE = 0.9
SEG_MAX_MS = 80
PERIOD_TOL = 0.03    # mean period, relative
DUTY_TOL = 0.04      # mean duty cycle (share of time the line is high), absolute


class Checks:
    """TAP-style results ("ok - ..." / "not ok - ...") over the sample files in one directory."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.passed = self.failed = 0

    def ok(self, cond, what: str):
        if cond:
            self.passed += 1
            print(f"ok - {what}")
        else:
            self.failed += 1
            print(f"not ok - {what}")
        return cond

    def read(self, name: str) -> str:
        p = os.path.join(self.dir, name)
        return open(p).read() if os.path.exists(p) else ""

    def edges(self, name: str):
        """(start value, [(t_ms, value, prev_ms)], end (t_ms, value), max sampling gap in ms)."""
        start = None
        ev = []
        end = None
        gap = None
        for line in self.read(name).splitlines():
            f = line.split()
            if not f:
                continue
            if f[0] == "START":
                start = int(f[1])
            elif f[0] == "EDGE":
                ev.append((int(f[1]) / 1000, int(f[2]), int(f[3]) / 1000))
            elif f[0] == "END":
                end = (int(f[1]) / 1000, int(f[2]))
                gap = int(f[4].split("=")[1]) / 1000
        return start, ev, end, gap

    def blink(self, run: str, label: str, steps_ms: list[int], phys_on: int = 1,
              drop_ends: bool = False) -> bool:
        """Check `run`.status against a pattern of on/off steps (starting with on; `phys_on` is
        the line level of "on", 0 for active low). `drop_ends`: the window includes the pattern's
        start and the exit, so the first and last segments are partial and left out. Prints one
        "# label: ..." line with the measured figures. False when too little was seen."""
        start, ev, end, gap = self.edges(run + ".status")
        if not self.ok(start is not None and end is not None, f"{run}: sampled the status line"):
            return False
        exp = [(phys_on if i % 2 == 0 else 1 - phys_on, d) for i, d in enumerate(steps_ms)]
        # segments between edges: (level, midpoint length, shortest possible, longest possible)
        segs = [(ev[i][1], (ev[i + 1][0] + ev[i + 1][2] - ev[i][0] - ev[i][2]) / 2,
                 ev[i + 1][2] - ev[i][0], ev[i + 1][0] - ev[i][2]) for i in range(len(ev) - 1)]
        if drop_ends:
            segs = segs[1:-1]
        n = len(exp)

        def err(seg, step):
            lvl, _, lo, hi = seg
            if lvl != step[0]:
                return 1e9
            return max(0.0, lo - step[1], step[1] - hi)

        # align: which expected step the first segment is, by least worst error
        best = None
        for j in range(n):
            errs = [err(sg, exp[(j + k) % n]) for k, sg in enumerate(segs)]
            if errs and (best is None or max(errs) < best[1]):
                best = (j, max(errs))
        if not self.ok(best is not None and len(segs) >= 2 * n,
                       f"{run}: {len(segs)} whole steps seen (need {2 * n})"):
            print(f"# {label}: expected {steps_ms} ms; status line edges {[e[:2] for e in ev]}")
            return False
        j, worst = best
        # whole periods: from each occurrence of step 0 to the next
        idx = [k for k in range(len(segs)) if (j + k) % n == 0]
        periods = []
        duties = []
        for a, b in zip(idx, idx[1:]):
            cyc = segs[a:b]
            per = sum(sg[1] for sg in cyc)
            periods.append(per)
            duties.append(sum(sg[1] for sg in cyc if sg[0] == 1) / per)
        exp_period = sum(steps_ms)
        exp_duty = sum(d for lvl, d in exp if lvl == 1) / exp_period
        if not self.ok(len(periods) >= 2, f"{run}: {len(periods)} whole periods seen (need 2)"):
            return False
        mp = sum(periods) / len(periods)
        md = sum(duties) / len(duties)
        worst_mid = max(abs(sg[1] - exp[(j + k) % n][1]) for k, sg in enumerate(segs))
        print(f"# {label}: expected {steps_ms} ms{' (active low)' if phys_on == 0 else ''}: period "
              f"{exp_period} ms, line high {exp_duty * 100:.1f} %; measured over {len(periods)} periods: period "
              f"{mp:.1f} ms (min {min(periods):.1f}, max {max(periods):.1f}), line high {md * 100:.1f} %; "
              f"{len(segs)} steps, worst {worst_mid:.1f} ms off at the edges' midpoints, {worst:.1f} ms outside "
              f"what the samples allow; sampling gap <= {gap:.1f} ms")
        self.ok(abs(mp - exp_period) <= PERIOD_TOL * exp_period,
                f"{run}: period {mp:.1f} ms within {PERIOD_TOL * 100:.0f} % of {exp_period} ms")
        self.ok(abs(md - exp_duty) <= DUTY_TOL,
                f"{run}: duty {md * 100:.1f} % within {DUTY_TOL * 100:.0f} points of {exp_duty * 100:.1f} %")
        errs = [err(sg, exp[(j + k) % n]) for k, sg in enumerate(segs)]
        good = sum(1 for e in errs if e <= SEG_TOL_MS) / len(errs)
        self.ok(good >= SEG_SHARE and worst <= SEG_MAX_MS,
                f"{run}: {good * 100:.0f} % of steps within {SEG_TOL_MS} ms of their length (need "
                f"{SEG_SHARE * 100:.0f} %), worst {worst:.1f} ms (limit {SEG_MAX_MS}) beyond the sampling "
                f"uncertainty")
        return True
