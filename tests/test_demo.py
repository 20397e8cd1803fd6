"""`progression demo`: by default it keeps the bundled reader and trains only the sequence
model, beside the same model without films; its last line says plainly whether the films
helped. (The whole demo runs in tests/test_packaging.py, from the installed wheel.)"""

from __future__ import annotations

import argparse

from progression.commands import demo
from progression.trained import bundled_reader


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_demo_keeps_the_bundled_reader_and_trains_only_the_sequence_model(tmp_path):
    films, no_films, reader = demo._configs(_args(), tmp_path)

    assert reader == str(bundled_reader())
    assert (films.train.init_encoder, films.train.image_epochs) == (reader, 0)
    assert films.data.image_size == 256  # the reader's film size: the cohorts are simulated at it
    assert (no_films.model.use_images, no_films.train.init_encoder) == (False, "")
    assert no_films.data.path == films.data.path == str(tmp_path / "cohort_train")


def test_demo_without_a_reader_trains_the_tiny_model_from_scratch(tmp_path):
    films, _, reader = demo._configs(_args("--reader", "none", "data.image_size=32"), tmp_path)

    assert reader is None
    assert (films.train.init_encoder, films.train.image_epochs) == ("", 3)
    assert films.data.image_size == 32


def _rows(model: float, no_films: float, linear: float) -> dict:
    return {"model": {"mae": model}, "covariates_only": {"mae": no_films},
            "linear": {"mae": linear}}


def test_demo_verdict_says_what_the_films_add_and_where_the_model_is_not_ahead():
    scored, no_scores = demo._verdict({"scored": _rows(2.1, 2.0, 2.2),
                                       "no_scores": _rows(1.5, 2.0, 2.2)})

    assert scored.startswith("With scored history the model (1-year MAE 2.10) is NOT ahead of "
                             "the same model without films (2.00 without films")
    assert "and linear extrapolation" not in scored  # 2.10 < 2.20: ahead of that one
    assert no_scores.startswith("From films and covariates alone (no scores) the films add")
    assert "25% below the same model without films (2.00)" in no_scores
