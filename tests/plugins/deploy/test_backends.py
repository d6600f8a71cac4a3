"""What every serve backend adds to a record's answer (:meth:`mmcore_plugins.deploy.backends.Backend.warnings`):
a category value never seen in training is predicted (read as unknown, never refused) and its answer says so
under ``"warnings"``. Served here from a fit run (the session's cp1252 run, tests/plugins/conftest.py); the
export's backend is checked in test_export_fit_run.py (its 'west' record)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow  # the shared fit run (one epoch of a 40-row table)


def test_a_new_category_is_predicted_and_noted_in_its_answer(cp1252_fit_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mmcore_plugins.deploy.backends import open_backend
    from mmcore_plugins.deploy.serve import create_app

    records = [{"Kunde": "Acme", "Stadt": "Berlin", "Betrag": 0.5},  # two new categories
               {"Kunde": "Müller", "Stadt": "Zürich", "Betrag": "0.5"},  # trained ones (non-ASCII, as trained)
               {"Kunde": None, "Stadt": "", "Betrag": 1.0}]  # empty cells: missing, not unknown
    with TestClient(create_app(open_backend(cp1252_fit_run))) as client:
        answer = client.post("/predict", json={"records": records})
    assert answer.status_code == 200, answer.text
    first, second, third = answer.json()["predictions"]
    assert "prediction" in first and first["warnings"] == [
        "column 'Kunde': 'Acme' was not seen in training; it was treated as unknown",
        "column 'Stadt': 'Berlin' was not seen in training; it was treated as unknown"]
    assert "warnings" not in second and "warnings" not in third
