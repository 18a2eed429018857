"""Cross-member read-after-write window on 3-member ensembles (rookery, then ZooKeeper).

For every ordered pair of members (writer, reader): a client on the writer creates N nodes one by one;
right after each acknowledged create a client on the reader calls exists(); prints how many of N
were not visible yet. ZooKeeper allows this without sync; the count measures how long a member lags.

    .venv/bin/python tests/python/ensemble_stale_reads.py      # about 1 min
"""
import sys, time, tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import conftest
from kazoo.client import KazooClient
N = 300
for kind in ("rookery", "zk"):
    wd = Path(tempfile.mkdtemp(prefix=f"stale-{kind}-"))
    ens = conftest.start_ensemble(kind, wd)
    try:
        modes = ens.modes()
        res = {}
        for wi in range(3):
            for ri in range(3):
                if wi == ri: continue
                w = KazooClient(hosts=ens.member_hosts(wi), timeout=15); w.start(15)
                r = KazooClient(hosts=ens.member_hosts(ri), timeout=15); r.start(15)
                base = f"/stale-{wi}{ri}"
                w.create(base)
                stale = 0
                for i in range(N):
                    p = f"{base}/n{i}"
                    w.create(p)
                    if r.exists(p) is None:
                        stale += 1
                res[f"{modes[wi][0]}{wi+1}->{modes[ri][0]}{ri+1}"] = stale
                w.stop(); w.close(); r.stop(); r.close()
        print(kind, "modes", modes, "stale reads of", N, "per writer->reader member:", res, flush=True)
    finally:
        ens.stop()
