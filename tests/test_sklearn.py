"""fastbp.sklearn: scikit-learn's own estimator checks, and the estimators in Pipeline,
cross_val_score and GridSearchCV."""
import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits, make_regression
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastbp.sklearn import MLPClassifier, MLPRegressor, UnscaledInputWarning

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# The NumPy backend keeps these checks free of compile time; the math is the same on every backend.
ESTIMATORS = [  # scikit-learn's defaults (Adam, relu, (100,)), and each solver and learning-rate rule
    MLPClassifier(backend="numpy"),
    MLPRegressor(backend="numpy", dtype="float64"),
    MLPClassifier(backend="numpy", solver="sgd", learning_rate="invscaling", learning_rate_init=0.1,
                  activation="tanh", hidden_layer_sizes=(20,), dtype="float64", max_iter=60),
    MLPRegressor(backend="numpy", solver="lbfgs", activation="tanh", hidden_layer_sizes=(10,), dtype="float64"),
    MLPClassifier(backend="numpy", solver="lbfgs", hidden_layer_sizes=(10,), dtype="float64"),
    MLPClassifier(backend="numpy", solver="sgd", learning_rate="adaptive", learning_rate_init=0.5, loss="quadratic",
                  activation="logistic", hidden_layer_sizes=(30,), batch_size=10, warm_start=True, max_iter=20),
    MLPClassifier(backend="numba", hidden_layer_sizes=(20,)),
]
SAMPLE_WEIGHT_CHECKS = ("check_sample_weight_equivalence_on_dense_data", "check_sample_weight_equivalence_on_sparse_data")


def expected_failed_checks(estimator):
    failed = {}
    if estimator.warm_start:
        failed["check_supervised_y_2d"] = (
            "warm_start=True: the check fits the same estimator twice (1-D y, then a column y) and "
            "expects equal predictions, but the second fit continues from the first one's weights")
    # weights equal to repeating samples, to 1e-7: true in float64 with whole-set batches (the
    # float64 Adam and L-BFGS configurations here pass it), not otherwise
    if np.dtype(estimator.dtype) == np.float32:
        reason = "float32 (fastbp's default): weighted and repeated fits agree to about 1e-4; the check asks 1e-7"
    elif estimator.solver == "sgd" and estimator.learning_rate == "invscaling":
        reason = "invscaling's rate counts the samples seen (t_), which repeating samples changes (as scikit-learn's)"
    else:
        reason = None
    if reason:
        failed.update({check: reason for check in SAMPLE_WEIGHT_CHECKS})
    return failed


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.25, random_state=0)


def test_classifier_learns_digits_and_predicts_probabilities(digits):
    X, Xt, y, yt = digits
    clf = MLPClassifier(hidden_layer_sizes=(30,), max_iter=15, learning_rate_init=0.5, random_state=0, solver="sgd", activation="logistic", batch_size=10, momentum=0.0, alpha=0.0, 
                        backend="numpy").fit(X, y)
    assert clf.score(Xt, yt) > 0.9
    proba = clf.predict_proba(Xt)
    assert proba.shape == (len(Xt), 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(Xt))
    assert clf.n_features_in_ == 64 and clf.n_iter_ == len(clf.loss_curve_) == 15
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert [w.shape for w in clf.coefs_] == [(64, 30), (30, 10)]


def test_string_labels_and_nielsen_style_loss(digits):
    X, Xt, y, yt = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    clf = MLPClassifier(loss="quadratic", learning_rate_init=3.0, max_iter=10, random_state=1, solver="sgd", activation="logistic", batch_size=10, momentum=0.0, alpha=0.0, 
                        hidden_layer_sizes=(30,),
                        backend="numpy").fit(X, names[y])
    assert list(clf.classes_) == sorted(names)
    assert np.mean(clf.predict(Xt) == names[yt]) > 0.85


def test_same_random_state_same_model_and_different_state_differs(digits):
    X, _, y, _ = digits
    fit = lambda seed: MLPClassifier(max_iter=2, random_state=seed, backend="numpy").fit(X, y)  # noqa: E731
    a, b, c = fit(3), fit(3), fit(4)
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])
    assert not np.allclose(a.coefs_[0], c.coefs_[0])


def test_partial_fit_needs_classes_first_and_equals_epochs_of_fit(digits):
    X, _, y, _ = digits
    clf = MLPClassifier(random_state=0, shuffle=False, backend="numpy")
    with pytest.raises(ValueError, match="classes: expected all class labels on the first call"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[y < 5], y[y < 5], classes=np.arange(10))
    assert list(clf.classes_) == list(range(10)) and clf.n_iter_ == 1
    clf.partial_fit(X, y)
    assert clf.n_iter_ == 2
    with pytest.raises(ValueError, match=r"classes: \[0, 1\] differ"):
        clf.partial_fit(X, y, classes=[0, 1])
    with pytest.raises(ValueError, match="labels \\[11\\] are not among the classes"):
        clf.partial_fit(X[:3], [0, 1, 11])
    # two partial_fit epochs in order equal fit with max_iter=2 (no shuffling, same seed)
    inc = MLPClassifier(random_state=0, shuffle=False, backend="numpy", dtype="float64")
    inc.partial_fit(X, y, classes=np.arange(10)).partial_fit(X, y)
    full = MLPClassifier(random_state=0, shuffle=False, backend="numpy", dtype="float64", max_iter=2).fit(X, y)
    np.testing.assert_allclose(inc.coefs_[1], full.coefs_[1], rtol=1e-12)


def test_warm_start_continues_and_cold_start_restarts(digits):
    X, _, y, _ = digits
    clf = MLPClassifier(max_iter=3, random_state=0, warm_start=True, backend="numpy").fit(X, y)
    first = clf.coefs_[0].copy()
    clf.fit(X, y)
    assert clf.n_iter_ == 6 and len(clf.loss_curve_) == 6
    assert clf.loss_curve_[3] < clf.loss_curve_[0]  # continued from trained weights
    clf.set_params(warm_start=False).fit(X, y)
    assert clf.n_iter_ == 3
    np.testing.assert_allclose(clf.coefs_[0], first, rtol=1e-6)


def test_early_stopping_holds_out_data_and_keeps_the_best_weights(digits):
    X, _, y, _ = digits
    clf = MLPClassifier(early_stopping=True, validation_fraction=0.2, n_iter_no_change=2, tol=0.0,
                        max_iter=200, learning_rate_init=0.05, random_state=0, backend="numpy").fit(X, y)
    assert clf.n_iter_ < 200 and len(clf.validation_scores_) == clf.n_iter_ and clf.best_loss_ is None
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    # the held-out set is drawn as scikit-learn draws it: from random_state after the initial weights
    # (each layer's coefs then intercepts), not stratified for more than two classes
    rs = np.random.RandomState(0)
    for n_in, n_out in [(64, 100), (100, 10)]:
        rs.uniform(size=(n_in, n_out))
        rs.uniform(size=n_out)
    _, X_val, _, y_val = train_test_split(X, y, test_size=0.2, random_state=rs)
    assert clf.score(X_val, y_val) == pytest.approx(clf.best_validation_score_)


def test_convergence_on_training_loss_stops_with_tol_and_warns_at_max_iter(digits):
    X, _, y, _ = digits
    from sklearn.neural_network import MLPClassifier as Theirs

    stopped = MLPClassifier(tol=10.0, n_iter_no_change=1, max_iter=50, backend="numpy").fit(X, y)
    theirs = Theirs(tol=10.0, n_iter_no_change=1, max_iter=50).fit(X, y)
    assert stopped.n_iter_ == theirs.n_iter_ == 3  # stops once more than n_iter_no_change epochs fail, as theirs
    with pytest.warns(ConvergenceWarning, match="Maximum iterations \\(2\\) reached"):
        MLPClassifier(tol=0.0, max_iter=2, backend="numpy").fit(X, y)


def test_regressor_single_and_multi_output():
    X, y = make_regression(n_samples=200, n_features=5, n_targets=2, noise=0.1, random_state=0)
    X = StandardScaler().fit_transform(X)
    y = y / y.std(axis=0)
    reg = MLPRegressor(activation="tanh", max_iter=100, learning_rate_init=0.02, random_state=0,
                       backend="numpy").fit(X, y)
    assert reg.predict(X).shape == (200, 2) and reg.score(X, y) > 0.9
    reg1 = MLPRegressor(activation="tanh", max_iter=100, learning_rate_init=0.02, random_state=0,
                        backend="numpy").fit(X, y[:, 0])
    assert reg1.predict(X).shape == (200,) and reg1.score(X, y[:, 0]) > 0.9
    with pytest.raises(ValueError, match="expected 1 target columns"):
        reg1.partial_fit(X, y)


def test_pipeline_cross_val_score_gridsearch_clone_and_pickle(digits):
    X, Xt, y, yt = digits
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=5, learning_rate_init=0.01, random_state=0,
                                                         backend="numpy"))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.8
    grid = GridSearchCV(pipe, {"mlpclassifier__learning_rate_init": [0.01, 0.1]}, cv=2).fit(X, y)
    assert grid.best_params_["mlpclassifier__learning_rate_init"] in (0.01, 0.1)
    model = grid.best_estimator_
    copy = clone(model)
    assert copy.get_params()["mlpclassifier__max_iter"] == 5
    with pytest.raises(NotFittedError):
        copy.predict(Xt)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict_proba(Xt), model.predict_proba(Xt))
    assert restored[-1].net_.backend.name == "numpy"


@pytest.mark.parametrize("params,message", [
    ({"hidden_layer_sizes": (30, 0)}, "hidden_layer_sizes: expected positive integers"),
    ({"activation": "softplus"}, "activation: expected one of"),
    ({"loss": "hinge"}, "loss: expected one of"),
    ({"learning_rate_init": 0.0}, "learning_rate_init: expected a number > 0"),
    ({"validation_fraction": 1.0}, "validation_fraction: expected a number > 0 and < 1"),
    ({"backend": "tpu"}, "backend: expected one of"),
    ({"dtype": "float16"}, "dtype: expected 'float32' or 'float64'"),
])
def test_bad_parameters_are_named_at_fit(params, message):
    X, y = np.random.default_rng(0).normal(size=(20, 3)), np.arange(20) % 2
    clf = MLPClassifier(backend="numpy").set_params(**params)  # the constructor only stores them
    with pytest.raises(ValueError, match=message):
        clf.fit(X, y)


def test_pickle_loads_where_the_fitted_backend_is_unavailable(monkeypatch):
    import pickle
    import sys

    from fastbp.sklearn import MLPClassifier

    X = np.random.default_rng(0).normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(int)
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=5, backend="numpy", random_state=0).fit(X, y)
    clf.backend = "cupy"  # as if it had been fitted on a GPU
    blob = pickle.dumps(clf)
    monkeypatch.setitem(sys.modules, "cupy", None)
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back.predict(X), clf.predict(X))


def uint8_images(n=40, n_features=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, n_features), dtype=np.uint8), np.arange(n) % 2


@pytest.mark.parametrize("make", [lambda: MLPClassifier(max_iter=2, backend="numpy"),
                                  lambda: MLPRegressor(max_iter=2, backend="numpy")],
                         ids=["classifier", "regressor"])
def test_fitting_on_uint8_warns_that_the_values_are_not_scaled(make):
    X, y = uint8_images()
    name = type(make()).__name__
    assert issubclass(UnscaledInputWarning, UserWarning)
    for fit in (lambda est: est.fit(X, y), lambda est: est.partial_fit(X, y, **(
            {"classes": [0, 1]} if isinstance(est, MLPClassifier) else {}))):
        with pytest.warns(UnscaledInputWarning) as record:
            fit(make())
        [warning] = [w for w in record if w.category is UnscaledInputWarning]  # exactly one (record may also hold a ConvergenceWarning)
        message = str(warning.message)
        assert message.startswith(f"{name}: X is uint8 (values 0..{X.max()})")
        assert "not scaled" in message and "fastbp.Network scales uint8 inputs by 1/255" in message
        assert "X / 255.0" in message
        assert warning.filename == __file__  # it points at the caller's fit
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnscaledInputWarning)
        make().fit(X / 255.0, y)                        # scaled floats: no warning
        make().fit((X > 127).astype(np.uint8), y)       # uint8 0/1 features: nothing to scale, no warning


def test_uint8_input_trains_on_the_raw_values_as_the_warning_says():
    X, y = uint8_images()
    params = dict(max_iter=2, backend="numpy", dtype="float64", random_state=0)
    with pytest.warns(UnscaledInputWarning):
        raw = MLPClassifier(**params).fit(X, y)
    same = MLPClassifier(**params).fit(X.astype(np.float64), y)
    np.testing.assert_array_equal(raw.coefs_[0], same.coefs_[0])


# --- a drop-in for scikit-learn's estimators ----------------------------------------------------------
@pytest.mark.parametrize("ours,theirs", [("MLPClassifier", "MLPClassifier"), ("MLPRegressor", "MLPRegressor")])
def test_every_scikit_learn_parameter_exists_with_its_default(ours, theirs):
    import inspect

    import sklearn.neural_network as nn

    import fastbp.sklearn as fs

    mine = inspect.signature(getattr(fs, ours)).parameters
    for name, p in inspect.signature(getattr(nn, theirs)).parameters.items():
        assert name in mine, f"{ours} lacks scikit-learn's parameter {name!r}"
        if name != "loss" or ours == "MLPRegressor":
            assert mine[name].default == p.default, (name, mine[name].default, p.default)


def test_lbfgs_finds_scikit_learns_solution_from_the_same_initial_weights(digits):
    from sklearn.neural_network import MLPClassifier as Theirs

    X, Xt, y, yt = digits
    kw = dict(hidden_layer_sizes=(15,), solver="lbfgs", max_iter=60, alpha=1e-3, random_state=3)
    theirs = Theirs(**kw).fit(X, y)
    mine = MLPClassifier(**kw, backend="numpy", dtype="float64").fit(X, y)
    assert mine.n_iter_ == theirs.n_iter_ and mine.loss_ == pytest.approx(theirs.loss_, rel=1e-5)
    np.testing.assert_allclose(mine.coefs_[0], theirs.coefs_[0], atol=1e-4)
    assert mine.score(Xt, yt) == pytest.approx(theirs.score(Xt, yt), abs=0.01)


@pytest.mark.parametrize("params", [dict(solver="adam"), dict(solver="sgd", learning_rate_init=0.1),
                                    dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.1,
                                         nesterovs_momentum=False),
                                    dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.5)])
def test_stochastic_solvers_learn_as_scikit_learns_do(digits, params):
    from sklearn.neural_network import MLPClassifier as Theirs

    X, Xt, y, yt = digits
    kw = dict(hidden_layer_sizes=(30,), max_iter=40, random_state=0, **params)
    theirs = Theirs(**kw).fit(X, y)
    mine = MLPClassifier(**kw, backend="numba" if importlib_numba() else "numpy").fit(X, y)
    assert abs(mine.score(Xt, yt) - theirs.score(Xt, yt)) < 0.04
    assert mine.loss_curve_[0] == pytest.approx(theirs.loss_curve_[0], rel=0.05)  # the same start, the same loss
    assert mine.t_ == theirs.t_ and mine.n_iter_ == len(mine.loss_curve_)


def importlib_numba():
    import importlib.util

    return importlib.util.find_spec("numba") is not None


def test_fitted_attributes_as_scikit_learn_documents_them(digits):
    X, _, y, _ = digits
    binary = MLPClassifier(hidden_layer_sizes=(8, 6), max_iter=3, backend="numpy").fit(X, y % 2)
    assert binary.n_layers_ == 4 and binary.n_outputs_ == 1 and binary.out_activation_ == "logistic"
    assert [w.shape for w in binary.coefs_] == [(64, 8), (8, 6), (6, 1)]
    assert binary.predict_proba(X).shape == (len(X), 2) and binary.t_ == 3 * len(X)
    assert binary.best_loss_ == min(binary.loss_curve_) and binary.validation_scores_ is None
    multi = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, backend="numpy").fit(X, y)
    assert multi.out_activation_ == "softmax" and multi.n_outputs_ == 10
    reg = MLPRegressor(max_iter=3, backend="numpy").fit(X, y.astype(float))
    assert reg.out_activation_ == "identity" and reg.n_outputs_ == 1 and reg.loss_ == reg.loss_curve_[-1]
    with pytest.raises(ValueError, match="negative"):
        MLPRegressor(loss="poisson", backend="numpy").fit(X, y - 5.0)
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit") and hasattr(MLPClassifier(), "partial_fit")


def test_sparse_input_gives_the_dense_results(digits):
    import scipy.sparse as sp

    X, Xt, y, _ = digits
    kw = dict(hidden_layer_sizes=(10,), max_iter=3, random_state=0, backend="numpy", dtype="float64")
    dense = MLPClassifier(**kw).fit(X, y)
    for container in (sp.csr_matrix, sp.csc_matrix):
        sparse = MLPClassifier(**kw).fit(container(X), y)  # sparse all the way: scipy's products
        np.testing.assert_allclose(sparse.coefs_[0], dense.coefs_[0], rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(sparse.predict_proba(container(Xt)), dense.predict_proba(Xt), rtol=1e-10,
                                   atol=1e-13)
    part = MLPClassifier(**kw).partial_fit(sp.csr_matrix(X), y, classes=np.arange(10))
    assert part.n_iter_ == 1


@pytest.mark.parametrize("solver", ["lbfgs", "adam", "sgd"])
def test_sample_weights_of_zero_remove_samples_and_integers_repeat_them(digits, solver):
    X, _, y, _ = digits
    X, y = X[:150], y[:150]  # under 200: batch_size 'auto' is the whole set, so the order does not matter
    w = np.random.default_rng(0).integers(0, 3, len(X))
    kw = dict(hidden_layer_sizes=(10,), max_iter=20, random_state=0, backend="numpy", dtype="float64",
              solver=solver, shuffle=False, learning_rate_init=0.05 if solver != "lbfgs" else 0.001)
    weighted = MLPClassifier(**kw).fit(X, y, sample_weight=w)
    repeated = MLPClassifier(**kw).fit(np.repeat(X, w, axis=0), np.repeat(y, w))
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X), rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="sample_weight"):
        MLPClassifier(**kw).fit(X, y, sample_weight=np.ones(3))


@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_poisson_regression_as_scikit_learns(solver):
    from sklearn.neural_network import MLPRegressor as Theirs

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = rng.poisson(np.exp(0.5 * X[:, 0] - 0.3 * X[:, 1]))
    kw = dict(loss="poisson", hidden_layer_sizes=(8,), solver=solver, max_iter=50, random_state=0)
    theirs = Theirs(**kw).fit(X, y)
    mine = MLPRegressor(**kw, backend="numpy", dtype="float64").fit(X, y)
    assert mine.out_activation_ == theirs.out_activation_ == "exp" and (mine.predict(X) > 0).all()
    if solver == "lbfgs":  # from the same initial weights, the same minimum
        assert mine.loss_ == pytest.approx(theirs.loss_, rel=1e-5)
    else:
        assert mine.loss_curve_[0] == pytest.approx(theirs.loss_curve_[0], rel=0.02)
        assert mine.loss_ == pytest.approx(theirs.loss_, rel=0.05)
