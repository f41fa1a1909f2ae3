"""`python -m mc_engine.bench`: the whole suite (table + results/bench/*.json); `... forward`:
the analog forward alone; `... fidelity`: the aihwkit accuracy cells; `... gpu [--device D]
[--quick]`: the GPU check (on the GPU machine: ``pip install --no-deps --no-build-isolation -e .``
then ``python -m mc_engine.bench gpu``; mc_engine/bench/gpu.py)."""

from __future__ import annotations

import os
import sys

# One thread everywhere, set before numba/torch/BLAS load: the benchmark is single-threaded.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["fidelity"]:
        from mc_engine.bench import fidelity
        return fidelity.main(args[1:])
    if args[:1] == ["gpu"]:
        from mc_engine.bench import gpu
        return gpu.main(args[1:])
    if args[:1] == ["forward"]:
        from mc_engine.bench import forward
        forward.main()
        return 0
    if args:
        print("usage: python -m mc_engine.bench [forward | fidelity [--repeats N] | "
              "gpu [--device D] [--quick]]",
              file=sys.stderr)
        return 2
    from mc_engine.bench import suite
    return suite.main()


if __name__ == "__main__":
    sys.exit(main())
