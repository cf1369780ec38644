"""``fastbp bench`` from the repository (the code is fastbp/bench.py), plus ``--gpu``: the GPU
table of scripts/bench_gpu.py.

    python scripts/bench.py [fastbp bench options]
    python scripts/bench.py --gpu [bench_gpu options]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--gpu" in argv:  # the GPU table: fastbp cupy (fused and large batch), PyTorch CUDA, numba on the host
        import importlib.util

        spec = importlib.util.spec_from_file_location("bench_gpu", os.path.join(os.path.dirname(
            os.path.abspath(__file__)), "bench_gpu.py"))
        bench_gpu = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench_gpu)
        return bench_gpu.main([a for a in argv if a != "--gpu"])
    from fastbp.bench import main as bench_main

    return bench_main(argv)


if __name__ == "__main__":
    sys.exit(main())
