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
ESTIMATORS = [
    MLPClassifier(backend="numpy"),
    MLPRegressor(backend="numpy"),
    MLPClassifier(backend="numpy", loss="quadratic", activation="tanh", early_stopping=True,
                  batch_size="auto", dtype="float64", max_iter=60),
    MLPRegressor(backend="numpy", activation="tanh", early_stopping=True, momentum=0.5, alpha=0.1,
                 dtype="float64", max_iter=60),
    MLPClassifier(backend="numpy", loss="binary_cross_entropy", warm_start=True, max_iter=20),
]


def expected_failed_checks(estimator):
    if estimator.warm_start:
        return {"check_supervised_y_2d":
                "warm_start=True: the check fits the same estimator twice (1-D y, then a column y) and "
                "expects equal predictions, but the second fit continues from the first one's weights"}
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.25, random_state=0)


def test_classifier_learns_digits_and_predicts_probabilities(digits):
    X, Xt, y, yt = digits
    clf = MLPClassifier(hidden_layer_sizes=(30,), max_iter=15, learning_rate_init=0.5, random_state=0,
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
    clf = MLPClassifier(loss="quadratic", learning_rate_init=3.0, max_iter=10, random_state=1,
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
                        max_iter=200, learning_rate_init=2.0, random_state=0, backend="numpy").fit(X, y)
    assert clf.n_iter_ < 200 and len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    _, X_val, _, y_val = train_test_split(X, y, test_size=0.2, stratify=y,
                                          random_state=np.random.RandomState(0).randint(2**31 - 1, size=2)[1])
    assert clf.score(X_val, y_val) == pytest.approx(clf.best_validation_score_)


def test_convergence_on_training_loss_stops_with_tol_and_warns_at_max_iter(digits):
    X, _, y, _ = digits
    stopped = MLPClassifier(tol=10.0, n_iter_no_change=1, max_iter=50, backend="numpy").fit(X, y)
    assert stopped.n_iter_ == 2
    with pytest.warns(ConvergenceWarning, match="maximum iterations \\(2\\)"):
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
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=5, random_state=0, backend="numpy"))
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
