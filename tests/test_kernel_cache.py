"""The numba kernels' on-disk cache: where it is and how big (``fastbp info``), processes that
start together on one empty cache (Dask workers do; numba#4807 reports crashes there), and an
install folder that cannot be written (the cache goes to the user-wide folder instead). The
children train through the per-batch kernels (``fused=False``): a small compile, the same cache."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("numba")

import fastbp as fb  # noqa: E402
from fastbp.kernels import _nb_common as C  # noqa: E402

CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import fastbp as fb
    rng = np.random.default_rng(0)
    X = rng.random((60, 12)).astype(np.float32)
    y = rng.integers(0, 3, 60)
    net = fb.Network.from_sizes([12, 5, 3], backend=fb.get_backend("numba", fused=False), seed=0)
    net.fit(X, y, epochs=3, momentum=0.5)
    info = fb.get_backend("numba").info()
    print(json.dumps({"W": net.get_params()[0]["W"].tolist(), "fastbp": fb.__file__,
                      "cache_dir": info["cache_dir"], "cache_files": info["cache_files"]}))
""")


def reference_weights():
    rng = np.random.default_rng(0)
    X = rng.random((60, 12)).astype(np.float32)
    y = rng.integers(0, 3, 60)
    net = fb.Network.from_sizes([12, 5, 3], backend="numpy", seed=0)
    net.fit(X, y, epochs=3, momentum=0.5)
    return net.get_params()[0]["W"]


def child(tmp_path, env_update, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(env_update)
    return subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=cwd or tmp_path)


def result(proc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_info_says_where_the_kernel_cache_is_and_how_big():
    net = fb.Network.from_sizes([12, 5, 3], backend=fb.get_backend("numba", fused=False), seed=0)
    net.fit(np.random.default_rng(0).random((20, 12)), np.arange(20) % 3)  # something compiled or loaded
    info = fb.get_backend("numba").info()
    assert os.path.isdir(info["cache_dir"]) and info["cache_files"] > 0 and info["cache_bytes"] > 0
    if "NUMBA_CACHE_DIR" not in os.environ:
        assert info["cache_dir"].startswith(C.KERNELS_DIR)
    out = subprocess.run([sys.executable, "-m", "fastbp", "info"], capture_output=True, text=True, timeout=120)
    assert f"numba kernel cache: {info['cache_dir']} (" in out.stdout


def test_four_processes_starting_together_on_one_empty_cache_all_succeed(tmp_path):
    cache = tmp_path / "cache"
    procs = [child(tmp_path, {"NUMBA_CACHE_DIR": str(cache)}) for _ in range(4)]
    results = [result(p) for p in procs]
    ref = reference_weights()
    for r in results:
        np.testing.assert_allclose(np.array(r["W"]), ref, rtol=2e-4, atol=2e-5)
        assert r["cache_dir"].startswith(str(cache)) and r["cache_files"] > 0
    again = result(child(tmp_path, {"NUMBA_CACHE_DIR": str(cache)}))  # loads what the four wrote
    assert again["W"] == results[0]["W"]


def test_an_install_folder_that_cannot_be_written_caches_in_the_user_folder(tmp_path):
    package = tmp_path / "site" / "fastbp"
    here = os.path.dirname(fb.__file__)
    shutil.copytree(here, package, ignore=shutil.ignore_patterns("__pycache__", "kernels"))
    shutil.copytree(C.KERNELS_DIR, package / "kernels", ignore=shutil.ignore_patterns("__pycache__"))
    (package / "kernels" / "__pycache__").write_text("a file where the cache folder would go")  # unwritable
    user = tmp_path / "user-cache"
    r = result(child(tmp_path, {"PYTHONPATH": str(tmp_path / "site"), "XDG_CACHE_HOME": str(user)}))
    assert r["fastbp"].startswith(str(package))
    np.testing.assert_allclose(np.array(r["W"]), reference_weights(), rtol=2e-4, atol=2e-5)
    assert r["cache_dir"].startswith(str(user)) and r["cache_files"] > 0


EDITED = textwrap.dedent("""
    import json
    import numpy as np
    import fastbp as fb
    a = np.array([[1.0, 0.5]], np.float64)  # a saturated output: the loss is the clip's
    y = np.array([[0.0, 1.0]], np.float64)
    print(json.dumps({"numba": fb.get_backend("numba", "float64").loss(a, y, "binary_cross_entropy"),
                      "numpy": fb.get_backend("numpy", "float64").loss(a, y, "binary_cross_entropy"),
                      "cache_dir": fb.get_backend("numba").info()["cache_dir"], "fastbp": fb.__file__}))
""")


def test_an_edit_of_a_constant_in_a_helper_module_reaches_the_cached_kernels(tmp_path):
    """numba#1833: a kernel's cache entry is keyed on its own file only, so an edit of a constant in
    another module it reads (here ops.py's cross-entropy clip, read by _nb_math.py through
    _nb_common.py) would leave the old machine code in use. Checked on a copied package: the
    cached kernel follows the edit. And each version of the kernel sources caches in a folder of
    its own, the other version's left as it was: Numba unpickles an index file before it checks
    its stamp, so one written by another version (whose types name a module this one lacks)
    made every fit fail."""
    package = tmp_path / "site" / "fastbp"
    shutil.copytree(os.path.dirname(fb.__file__), package, ignore=shutil.ignore_patterns("__pycache__", "kernels"))
    shutil.copytree(C.KERNELS_DIR, package / "kernels", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=str(tmp_path / "site"), NUMBA_CACHE_DIR=str(tmp_path / "cache"))

    def losses():
        out = subprocess.run([sys.executable, "-c", EDITED], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=300)
        assert out.returncode == 0, out.stderr
        r = json.loads(out.stdout.strip().splitlines()[-1])
        assert r["fastbp"].startswith(str(package))
        return r["numba"], r["numpy"], r["cache_dir"]

    before = losses()
    assert before[0] == pytest.approx(before[1], rel=1e-12)
    ops = package / "kernels" / "ops.py"
    text = ops.read_text()
    assert '"float64": 1e-12}' in text
    ops.write_text(text.replace('"float64": 1e-12}', '"float64": 1e-6}'))
    after = losses()
    assert after[1] != pytest.approx(before[1], rel=1e-3)  # the edit changes the loss
    assert after[0] == pytest.approx(after[1], rel=1e-12)  # and the cached kernel follows it
    assert after[2] != before[2] and all(os.listdir(d) for d in (before[2], after[2]))
    ops.write_text(text)  # back to the first version: its folder again, the same results
    assert losses() == before


# CHILD, then a look at what loading its kernels brought in, and a user's own function compiled after them
LOADER = CHILD + textwrap.dedent("""
    registries = "numba.np.linalg" in sys.modules  # loaded with Numba's registries, which compiling needs
    from numba import njit

    @njit
    def user_function(a):
        return np.linalg.norm(a) + a.sum()

    print(json.dumps({"W": net.get_params()[0]["W"].tolist(), "registries": registries,
                      "user": user_function(np.ones(4))}))
""")


def test_kernels_load_from_the_cache_without_numbas_registries_and_compiling_still_works(tmp_path):
    cache = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    first = result(child(tmp_path, cache))  # compiles, fills the cache
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    out = subprocess.run([sys.executable, "-c", LOADER], capture_output=True, text=True, timeout=300,
                         env={**env, **cache}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["W"] == first["W"]  # the same machine code, from the cache
    assert not loaded["registries"], "loading the cached kernels made Numba load every registry"
    assert loaded["user"] == 6.0


# --- kernels compiled separately, called by symbol (``_nb_common.separately``) ---------------------
SEPARATE = textwrap.dedent("""
    from numba import njit
    from fastbp.kernels._nb_common import separately

    @separately
    def leaf(x, c):
        total = 0.0
        for i in range(x.shape[0]):
            x[i] += c
            total += x[i]
        return total

    @njit(cache=True)
    def mid(x):
        return leaf(x, 1.0) + leaf(x, 2.0)

    @njit(cache=True)
    def top(x):
        return mid(x) * 10.0
""")

SEPARATE_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    import separate_kernels as K
    x = np.arange(4.0)
    value = getattr(K, sys.argv[2])(x)
    ir = "".join(K.mid.inspect_llvm().values()) if K.mid.stats.cache_misses else ""
    print(json.dumps({"value": value, "x": x.tolist(), "ir": ir}))
""")


def _separate_child(tmp_path, name):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", SEPARATE_CHILD, str(tmp_path), name], capture_output=True,
                         text=True, timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 0, f"{name}: return code {out.returncode}\n{out.stderr}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_separately_compiled_kernel_is_called_by_symbol_and_loads_before_its_cached_callers(tmp_path):
    """A caller holds a call to the separate kernel's symbol, not its code; a new process that
    loads the caller from the cache loads the kernel first, also when the caller was compiled in a
    process that had itself loaded its callees from the cache (Numba keeps the reload hooks of a
    loaded function off its library: the caller's cache entry then lacked the hook, and calling it
    in a third process jumped to an undefined symbol, a segfault)."""
    (tmp_path / "separate_kernels.py").write_text(SEPARATE)
    first = _separate_child(tmp_path, "mid")  # compiles leaf and mid
    assert first["value"] == 28.0 and first["x"] == [3.0, 4.0, 5.0, 6.0]
    declared = [line for line in first["ir"].splitlines() if line.startswith("declare") and "fastbp." in line]
    assert declared, "mid does not call leaf by its symbol"
    assert not [line for line in first["ir"].splitlines() if line.startswith("define") and "leaf" in line]
    second = _separate_child(tmp_path, "top")  # compiles top; mid and leaf come from the cache
    third = _separate_child(tmp_path, "top")  # all three from the cache
    assert second["value"] == third["value"] == 280.0
    assert third["x"] == [3.0, 4.0, 5.0, 6.0]


def test_a_separately_compiled_kernel_called_from_python_runs_the_kernel():
    from fastbp.kernels import _nb_blocked as B

    rng = np.random.default_rng(0)
    m, ld, n = 7, 32, 6
    x = rng.random((m, ld)).astype(np.float32)
    W = rng.random(n * ld).astype(np.float32)  # unit j's weights: W[j*ld:(j+1)*ld]
    b = rng.random(n).astype(np.float32)
    Z = np.zeros((m, n), np.float32)
    B._forward_units(x, 0, m, ld, W, 0, b, 0, n, np.float32(0.5), Z)
    np.testing.assert_allclose(Z, 0.5 * x @ W.reshape(n, ld).T + b, rtol=1e-5)
    # the kernel's own code has no Python wrapper (only kernels call it): its twin with one ran
    assert B._forward_units.dispatcher.fastbp_twin.signatures


def test_a_kernel_only_kernels_call_has_no_python_or_c_wrapper_and_from_python_runs_a_twin():
    """``for_kernels``: compiled without Numba's Python wrapper (a call from Python through the
    missing wrapper was a segfault), so a call from Python compiles a twin with it (named apart:
    a cache file of its own); no kernel has Numba's C-callable wrapper. (Compiled here, uncached,
    so that its LLVM IR is at hand.)"""
    from numba import njit

    from fastbp.kernels import _nb_common as C
    from fastbp.kernels import _nb_math as KM

    def twice_exp(x):
        return KM.exp32(x) * np.float32(2)

    kernel = C.for_kernels(twice_exp, cache=False)

    @njit
    def caller(x):
        return kernel(x) + KM.sigmoid32(x)

    x = np.float32(0.3)
    expected = 2 * np.exp(np.float64(x)) + 1 / (1 + np.exp(-np.float64(x)))
    assert abs(caller(x) - expected) < 1e-5
    assert isinstance(kernel, C._KernelsOnly) and isinstance(KM.exp32, C._KernelsOnly)
    assert abs(kernel(x) - 2 * np.exp(np.float64(x))) < 1e-5  # from Python: the twin
    twin = kernel.fastbp_twin
    assert twin.py_func.__name__ == "twice_exp__py" and twin.signatures
    for dispatcher, python in [(kernel, False), (twin, True)]:
        cres = dispatcher.overloads[dispatcher.signatures[0]]
        llvm = cres.library.get_llvm_str()
        assert cres.fndesc.llvm_func_name in llvm
        assert (cres.fndesc.llvm_cpython_wrapper_name in llvm) == python
        assert cres.fndesc.llvm_cfunc_wrapper_name not in llvm


def test_a_cached_kernel_calling_an_undefined_kernel_symbol_is_compiled_again_not_run():
    """The guard before a cached kernel of ours is linked: its reload hooks run first (they define
    the symbols of the kernels it calls), then every kernel symbol its machine code names must be
    defined; if one is not, the entry counts as not cached (compiled again) instead of calling
    address 0."""
    name = b"fastbp.0123456789ab._nb_test.kernel.0123456789abcdef"
    code = b"\x7fELF..." + b"\x00" + name + b"\x00more"

    def data(hooks):
        return (("lib", "object", (code, b"")), None, None, None, None, None, "", hooks, ())

    assert not C._symbols_defined(data([]))
    ran = []

    def hook():  # what a _Load does: define the symbol
        ran.append(1)
        C._DEFINED.add(name)

    try:
        assert C._symbols_defined(data([hook])) and ran == [1]
        assert C._symbols_defined(data([]))  # now defined in this process
    finally:
        C._DEFINED.discard(name)
    assert C._symbols_defined(data([])) is False
    assert C._symbols_defined(("lib", "bitcode")) is True  # a layout it does not know: left to Numba


APART = textwrap.dedent("""
    from numba import njit
    from fastbp.kernels._nb_common import separately

    @njit(cache=True)
    def plain(x):
        return x.sum()

    plain_apart = separately(plain.py_func, name="plain_apart")

    @njit(cache=True)
    def uses_apart(x):
        return plain_apart(x) + 1.0
""")


def test_an_njit_kernel_compiled_apart_under_another_name_has_cache_entries_of_its_own(tmp_path, monkeypatch):
    """``separately(fn, name=...)``: one Python function compiled both ways (linked into some
    kernels, called by symbol from others), each with its own cache index, neither overwriting
    the other's entries."""
    (tmp_path / "apart_kernels.py").write_text(APART)
    monkeypatch.syspath_prepend(str(tmp_path))
    import apart_kernels as K

    x = np.arange(5.0)
    assert K.plain(x) == 10.0 and K.plain_apart(x) == 10.0 and K.uses_apart(x) == 11.0
    ir = "".join(K.uses_apart.inspect_llvm().values()).splitlines()
    assert any(line.startswith("declare") and ".plain_apart." in line for line in ir)
    assert K.plain_apart.dispatcher.py_func.__qualname__ == "plain_apart"
    index = [d._cache._cache_file._index_path for d in (K.plain, K.plain_apart.dispatcher)]
    assert index[0] != index[1] and all(os.path.exists(p) for p in index)



BOUND = textwrap.dedent("""
    from numba import njit, types
    from fastbp.kernels._nb_common import separately

    @separately(constants=("code",))
    def pick(x, code):
        if code == 0:
            return x + 1.0
        if code == 1:
            return x * 2.0
        return x.no_such_attribute  # untypable: compiles only where the code prunes it

    @separately(constants=("code",), returns=types.float64)
    def outer(x, code):
        return pick(x, code) - 0.5

    @separately(constants=("code",), returns=types.float64)
    def outer_again(x, code):
        return pick(x, code) - 0.25

    outer_at, outer_again_at = outer.at, outer_again.at

    @njit(cache=True)
    def run(fns, x, code):
        return outer_at(fns, 0, x, code)

    @njit(cache=True)
    def run_again(fns, x, code):
        return outer_again_at(fns, 0, x, code)
""")

BOUND_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from numba import typeof, types
    sys.path.insert(0, sys.argv[1])
    import bound_kernels as K
    from fastbp.kernels._nb_common import slot_addresses
    values, hits = [], []
    for caller, callee in ((K.run, K.outer), (K.run_again, K.outer_again)):
        argtypes = (typeof(np.zeros(1, np.int64)), types.float64, types.int64)
        caller.compile(argtypes)
        for code in (0, 1):
            fns = slot_addresses(caller.overloads[argtypes], lambda slot: {"code": code})
            values.append(caller(fns, 3.0, 7))
            hits.append(sum(callee.separate.variant((("code", code),)).dispatcher.stats.cache_hits.values()))
        hits.append(sum(caller.stats.cache_hits.values()))
    print(json.dumps({"values": values, "hits": hits}))
""")


def test_kernels_called_by_address_are_compiled_for_the_codes_chosen_and_only_their_branches(tmp_path):
    """``kernel.at(fns, slot, ...)``: the caller is compiled once and calls the kernel compiled
    for the codes its Python side chose (``slot_addresses``), which passes its bound code on as a
    constant to the kernels it calls (``separately(constants=...)``): each is compiled for that
    code, with the branches of other codes pruned before typing (an untypable branch of another
    code does not stop them; compiled for a code unknown until it runs, the kernel cannot be).
    Each code's kernel is its own, also in a second caller typed after another code's (Numba
    files an intrinsic's lowering by its signature: with the codes unliteral there, ``outer_again``
    for code 0 called ``pick`` for code 1), and a new process loads them all from the cache."""
    (tmp_path / "bound_kernels.py").write_text(BOUND)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    outs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", BOUND_CHILD, str(tmp_path)], capture_output=True, text=True,
                             timeout=300, env=env, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        outs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    # the chosen code decides, not the argument passed (7)
    assert outs[0]["values"] == outs[1]["values"] == [3.5, 5.5, 3.75, 5.75]
    assert outs[0]["hits"] == [0] * 6 and outs[1]["hits"] == [1] * 6
    sys.path.insert(0, str(tmp_path))
    try:
        import bound_kernels as K
        from numba.core.errors import TypingError

        with pytest.raises(TypingError):
            K.pick.dispatcher(3.0, 0)  # the code only known at run time: every branch typed
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("bound_kernels", None)


def test_the_kernels_imported_first_under_another_name_keep_one_stamped_cache_folder(tmp_path):
    """A checkout's ``kernels`` package imported as such (``from kernels import ...``, the repository
    root on sys.path) before ``fastbp.kernels``: the second copy of ``_nb_common`` stamped Numba's
    already stamped locators again, and the kernels' cache folder became ``fastbp-<h>/fastbp-<h>``."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(C.KERNELS_DIR)!r})
        import kernels._nb_common
        from fastbp.kernels import numba_backend as NB
        print(NB.kernel_cache()["cache_dir"])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    folder = out.stdout.strip().splitlines()[-1]
    assert os.path.basename(folder).startswith("fastbp-")
    assert not os.path.basename(os.path.dirname(folder)).startswith("fastbp-"), folder
