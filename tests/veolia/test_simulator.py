"""The Veolia simulator over loopback HTTP (and its requests adapter): protocol, data, faults."""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests

from tests.helpers.broker import wait_until
from veolia2mqtt.veolia.simulator import (
    FAULTS,
    ROUTE_KEYS,
    ContractSpec,
    MissingTimeoutError,
    Scenario,
    Simulator,
)

PARIS = ZoneInfo("Europe/Paris")
TODAY = date(2026, 6, 10)
AMZ = "application/x-amz-json-1.1"
INITIATE = "AWSCognitoIdentityProviderService.InitiateAuth"
RESPOND = "AWSCognitoIdentityProviderService.RespondToAuthChallenge"
HOUSE, GARDEN = 4718203, 4718204
HOUSE_METER = "I19FA051732"
COGNITO_URL = "https://cognito-idp.eu-west-3.amazonaws.com"
BACKEND_URL = "https://prd-ael-sirius-backend.istefr.fr"

# The §4.1 sample, verbatim.
ESPACE_CLIENT_SAMPLE = {
    "contacts": [
        {
            "id_contact": "1002871455",
            "tiers": [
                {
                    "id": "2004518873",
                    "abonnements": [
                        {
                            "id_abonnement": 4718203,
                            "numero_compteur": "I19FA051732",
                            "adresse_de_branchement": "12 RUE DES LILAS 34000 MONTPELLIER",
                            "emplacement_compteur": "REGARD EXTERIEUR",
                            "libelle_contrat": "EAU POTABLE ET ASSAINISSEMENT",
                            "statut": "ACTIF",
                        },
                        {
                            "id_abonnement": 4718204,
                            "numero_compteur": "I21FA104733",
                            "adresse_de_branchement": "12 RUE DES LILAS 34000 MONTPELLIER",
                            "emplacement_compteur": "JARDIN",
                            "libelle_contrat": "EAU POTABLE ARROSAGE",
                            "statut": "ACTIF",
                        },
                    ],
                }
            ],
        }
    ]
}
ALERTS_SAMPLE = {
    "seuils": {
        "journalier": {
            "valeur": 100,
            "unite": "L",
            "moyen_contact": {"souscrit_par_email": True, "souscrit_par_mobile": True},
        },
        "mensuel": {
            "valeur": 5,
            "unite": "M3",
            "moyen_contact": {"souscrit_par_email": True, "souscrit_par_mobile": False},
        },
    }
}


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
def make_sim():
    """Start simulators on free ports; all are stopped after the test."""
    started: list[Simulator] = []

    def make(scenario: Scenario | None = None, **kwargs) -> Simulator:
        sim = Simulator(scenario or Scenario(today=TODAY), **kwargs).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim) -> Simulator:
    return make_sim()


@pytest.fixture
def http(sim):
    with requests.Session() as session:
        yield session


def cognito(http, sim, payload=None, *, target=INITIATE, content_type=AMZ, raw=None):
    headers = {"Content-Type": content_type}
    if target is not None:
        headers["X-Amz-Target"] = target
    data = raw if raw is not None else json.dumps(payload)
    return http.post(sim.auth_url + "/", data=data, headers=headers, timeout=5)


def password_payload(sim, *, client_id=None, **params):
    auth = {"USERNAME": sim.scenario.email, "PASSWORD": sim.scenario.password} | params
    return {
        "ClientId": client_id or sim.scenario.client_id,
        "AuthFlow": "USER_PASSWORD_AUTH",
        "AuthParameters": {k: v for k, v in auth.items() if v is not None},
    }


def refresh_payload(sim, token):
    return {
        "ClientId": sim.scenario.client_id,
        "AuthFlow": "REFRESH_TOKEN_AUTH",
        "AuthParameters": {"REFRESH_TOKEN": token},
    }


def login(http, sim) -> str:
    response = cognito(http, sim, password_payload(sim))
    assert response.status_code == 200, response.text
    return response.json()["AuthenticationResult"]["AccessToken"]


def get(http, sim, path, token=None, params=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http.get(sim.api_url + path, params=params, headers=headers, timeout=5)


def spec_of(sim, contract=HOUSE) -> ContractSpec:
    return next(c for c in sim.scenario.contracts if c.id_abonnement == contract)


def series_params(spec, year, month=None):
    params = {
        "annee": year,
        "numero-pds": spec.numero_pds,
        "date-debut-abonnement": spec.date_debut_abonnement.isoformat(),
    }
    if month is not None:
        params["mois"] = month
    return params


def daily(http, sim, token, year, month, *, contract=HOUSE):
    params = series_params(spec_of(sim, contract), year, month)
    return get(http, sim, f"/consommations/{contract}/journalieres", token, params)


def monthly(http, sim, token, year, *, contract=HOUSE):
    params = series_params(spec_of(sim, contract), year)
    return get(http, sim, f"/consommations/{contract}/mensuelles", token, params)


def assert_aws_error(response, error_type, message=None):
    assert response.status_code == 400
    assert response.headers["Content-Type"] == AMZ
    assert response.headers["x-amzn-ErrorType"] == f"{error_type}:"
    body = response.json()
    assert body["__type"] == error_type
    if message is not None:
        assert body["message"] == message


def by_date(rows):
    return {date.fromisoformat(r["date_releve"]): r for r in rows}


# -- Cognito ---------------------------------------------------------------------------------


def test_password_login_returns_the_cognito_shape(sim, http):
    response = cognito(http, sim, password_payload(sim))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == AMZ
    assert response.headers["x-amzn-RequestId"]
    body = response.json()
    assert body["ChallengeParameters"] == {}
    result = body["AuthenticationResult"]
    assert list(result) == ["AccessToken", "ExpiresIn", "IdToken", "RefreshToken", "TokenType"]
    assert result["ExpiresIn"] == 3600
    assert result["TokenType"] == "Bearer"
    assert result["RefreshToken"] == sim.scenario.refresh_token
    assert result["AccessToken"] != result["IdToken"]
    assert sim.stats()["cognito:USER_PASSWORD_AUTH"] == 1


def test_each_login_issues_a_new_token_and_username_case_is_ignored(sim, http):
    first = login(http, sim)
    payload = password_payload(sim, USERNAME=sim.scenario.email.upper())
    second = cognito(http, sim, payload).json()["AuthenticationResult"]["AccessToken"]
    assert first != second
    assert get(http, sim, "/abonnements/4718203/facturation", first).status_code == 200
    assert get(http, sim, "/abonnements/4718203/facturation", second).status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "error_type", "message"),
    [
        ({"content_type": "application/json"}, "InvalidParameterException", None),
        ({"raw": "{not json"}, "SerializationException", None),
        ({"target": "AWSCognitoIdentityProviderService.SignUp"}, "UnknownOperationException", None),
        ({"target": None}, "UnknownOperationException", None),
        ({"client_id": "19bjc8ldefie683n889iiubjc8"}, "ResourceNotFoundException", None),
        ({"USERNAME": None}, "InvalidParameterException", None),
        ({"PASSWORD": ""}, "InvalidParameterException", None),
        ({"USERNAME": "marie@example.fr"}, "UserNotFoundException", "User does not exist."),
        ({"PASSWORD": "wrong"}, "NotAuthorizedException", "Incorrect username or password."),
    ],
)
def test_cognito_validation(sim, http, kwargs, error_type, message):
    transport = {k: kwargs.pop(k) for k in ("content_type", "raw", "target") if k in kwargs}
    response = cognito(http, sim, password_payload(sim, **kwargs), **transport)
    assert_aws_error(response, error_type, message)


def test_unsupported_auth_flow_and_missing_parameters(sim, http):
    payload = password_payload(sim) | {"AuthFlow": "CUSTOM_AUTH"}
    assert_aws_error(cognito(http, sim, payload), "InvalidParameterException")
    payload = {"ClientId": sim.scenario.client_id, "AuthFlow": "USER_PASSWORD_AUTH"}
    assert_aws_error(cognito(http, sim, payload), "InvalidParameterException")
    assert_aws_error(cognito(http, sim, refresh_payload(sim, "")), "InvalidParameterException")


def test_refresh_token_flow(sim, http):
    response = cognito(http, sim, refresh_payload(sim, sim.scenario.refresh_token))
    assert response.status_code == 200
    result = response.json()["AuthenticationResult"]
    assert "RefreshToken" not in result
    assert get(http, sim, "/abonnements/4718203/facturation", result["AccessToken"]).ok
    refused = cognito(http, sim, refresh_payload(sim, "eyJ.stale.token"))
    assert_aws_error(refused, "NotAuthorizedException", "Invalid Refresh Token")
    assert sim.stats()["cognito:REFRESH_TOKEN_AUTH"] == 2
    assert sim.stats()["cognito:USER_PASSWORD_AUTH"] == 0


def test_accept_any_credentials(make_sim):
    sim = make_sim(Scenario(today=TODAY, accept_any_credentials=True))
    with requests.Session() as http:
        payload = password_payload(
            sim, client_id="54e8dri103e65defj6p67eolli", USERNAME="a@b.c", PASSWORD="x"
        )
        assert cognito(http, sim, payload).status_code == 200
        assert cognito(http, sim, refresh_payload(sim, "anything")).status_code == 200
        assert_aws_error(
            cognito(http, sim, password_payload(sim, PASSWORD=None)), "InvalidParameterException"
        )


@pytest.mark.parametrize(
    ("fault", "error_type", "message"),
    [
        ("wrong_password", "NotAuthorizedException", "Incorrect username or password."),
        ("unknown_user", "UserNotFoundException", "User does not exist."),
        ("password_attempts_exceeded", "NotAuthorizedException", "Password attempts exceeded"),
        ("cognito_throttled", "TooManyRequestsException", "Too many requests."),
    ],
)
def test_cognito_faults_fire_once_then_recover(sim, http, fault, error_type, message):
    sim.fail("cognito", fault=fault)
    assert_aws_error(cognito(http, sim, password_payload(sim)), error_type, message)
    assert cognito(http, sim, password_payload(sim)).status_code == 200
    assert sim.stats()["cognito:USER_PASSWORD_AUTH"] == 2


def test_wrong_password_fault_on_refresh_flow(sim, http):
    sim.fail("cognito:REFRESH_TOKEN_AUTH", fault="wrong_password")
    response = cognito(http, sim, refresh_payload(sim, sim.scenario.refresh_token))
    assert_aws_error(response, "NotAuthorizedException", "Invalid Refresh Token")


@pytest.mark.parametrize(
    ("name", "code_key", "medium"),
    [("SMS_MFA", "SMS_MFA_CODE", "SMS"), ("EMAIL_OTP", "EMAIL_OTP_CODE", "EMAIL")],
)
def test_challenge_and_its_answer(sim, http, name, code_key, medium):
    sim.fail("cognito", fault="challenge", challenge_name=name)
    response = cognito(http, sim, password_payload(sim))
    assert response.status_code == 200
    body = response.json()
    assert "AuthenticationResult" not in body
    assert body["ChallengeName"] == name
    assert body["ChallengeParameters"]["CODE_DELIVERY_DELIVERY_MEDIUM"] == medium
    session = body["Session"]

    def answer(code, session=session):
        return cognito(
            http,
            sim,
            {
                "ClientId": sim.scenario.client_id,
                "ChallengeName": name,
                "Session": session,
                "ChallengeResponses": {"USERNAME": sim.scenario.email, code_key: code},
            },
            target=RESPOND,
        )

    assert_aws_error(answer("000000"), "CodeMismatchException")
    assert_aws_error(answer("123456", session="forged"), "NotAuthorizedException")
    granted = answer(sim.scenario.challenge_code)
    assert granted.status_code == 200
    assert granted.json()["AuthenticationResult"]["AccessToken"]
    assert_aws_error(answer(sim.scenario.challenge_code), "NotAuthorizedException")
    assert sim.stats()["cognito:RespondToAuthChallenge"] == 4


def test_challenge_spares_the_refresh_flow(sim, http):
    sim.fail("cognito", fault="challenge")
    assert cognito(http, sim, refresh_payload(sim, sim.scenario.refresh_token)).status_code == 200
    assert "ChallengeName" in cognito(http, sim, password_payload(sim)).json()
    assert "AuthenticationResult" in cognito(http, sim, password_payload(sim)).json()


# -- tokens on the backend --------------------------------------------------------------------


def test_backend_requires_an_issued_bearer_token(sim, http):
    path = "/espace-client?type-front=WEB_ORDINATEUR"
    assert get(http, sim, path).status_code == 401
    assert get(http, sim, path, "forged-token").status_code == 401
    basic = http.get(sim.api_url + path, headers={"Authorization": "Basic eDp5"}, timeout=5)
    assert basic.status_code == 401
    assert basic.json() == {"message": "Unauthorized"}
    assert get(http, sim, path, login(http, sim)).status_code == 200


def test_token_expires_with_the_manual_clock(sim, http):
    token = login(http, sim)
    sim.advance(timedelta(seconds=3599))
    assert get(http, sim, "/abonnements/4718203/facturation", token).status_code == 200
    sim.advance(timedelta(seconds=1))
    expired = get(http, sim, "/abonnements/4718203/facturation", token)
    assert expired.status_code == 401
    assert expired.headers["Content-Type"] == "application/json"
    assert expired.json() == {"message": "The incoming token has expired"}
    assert get(http, sim, "/abonnements/4718203/facturation", login(http, sim)).ok


def test_token_lifetime_and_403_setting_with_an_injected_clock(make_sim):
    now = [datetime(2026, 6, 10, 8, 0, tzinfo=PARIS)]
    scenario = Scenario(expired_status=403, token_lifetime_s=60)
    sim = make_sim(scenario, clock=lambda: now[0])
    assert sim.today() == TODAY
    with requests.Session() as http:
        response = cognito(http, sim, password_payload(sim))
        assert response.json()["AuthenticationResult"]["ExpiresIn"] == 60
        token = response.json()["AuthenticationResult"]["AccessToken"]
        assert get(http, sim, "/abonnements/4718203/facturation", token).ok
        now[0] += timedelta(seconds=61)
        assert get(http, sim, "/abonnements/4718203/facturation", token).status_code == 403
        assert get(http, sim, "/abonnements/4718203/facturation").status_code == 403
    with pytest.raises(RuntimeError):
        sim.advance(timedelta(days=1))


def test_revoke_tokens(sim, http):
    token = login(http, sim)
    sim.revoke_tokens()
    assert get(http, sim, "/abonnements/4718203/facturation", token).status_code == 401
    assert get(http, sim, "/abonnements/4718203/facturation", login(http, sim)).ok


@pytest.mark.parametrize("status", [401, 403])
def test_token_expired_fault_invalidates_the_presented_token(sim, http, status):
    token = login(http, sim)
    sim.fail("journalieres", fault="token_expired", status=status)
    assert daily(http, sim, token, 2026, 6).status_code == status
    # As if it had expired: the same token stays refused (with the scenario's status).
    assert daily(http, sim, token, 2026, 6).status_code == 401
    assert daily(http, sim, login(http, sim), 2026, 6).status_code == 200


# -- routes ----------------------------------------------------------------------------------


def test_espace_client_is_the_sample_of_section_4_1(sim, http):
    response = get(http, sim, "/espace-client?type-front=WEB_ORDINATEUR", login(http, sim))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == ESPACE_CLIENT_SAMPLE
    assert get(http, sim, "/espace-client", login(http, sim)).status_code == 400


def walk(espace):
    return [
        a["id_abonnement"]
        for contact in espace["contacts"]
        for tiers in contact["tiers"]
        for a in tiers["abonnements"]
    ]


@pytest.mark.parametrize(
    ("nesting", "shape"),
    [("abonnements", [[2]]), ("tiers", [[1, 1]]), ("contacts", [[1], [1]])],
)
def test_nesting_modes(make_sim, nesting, shape):
    sim = make_sim(Scenario(today=TODAY, nesting=nesting))
    with requests.Session() as http:
        body = get(http, sim, "/espace-client?type-front=WEB_ORDINATEUR", login(http, sim)).json()
    assert walk(body) == [HOUSE, GARDEN]
    assert [[len(t["abonnements"]) for t in c["tiers"]] for c in body["contacts"]] == shape


def test_many_contracts_in_mixed_nesting(make_sim):
    scenario = Scenario.many(20, today=TODAY)
    assert len({c.numero_compteur for c in scenario.contracts}) == 20
    sim = make_sim(scenario)
    with requests.Session() as http:
        token = login(http, sim)
        body = get(http, sim, "/espace-client?type-front=WEB_ORDINATEUR", token).json()
        assert walk(body) == [c.id_abonnement for c in scenario.contracts]
        assert [[len(t["abonnements"]) for t in c["tiers"]] for c in body["contacts"]] == [
            [3, 3, 3],
            [3, 3, 3],
            [2],
        ]
        last = scenario.contracts[-1]
        rows = daily(http, sim, token, 2026, 6, contract=last.id_abonnement).json()
        assert rows[-1]["date_releve"] == (TODAY - timedelta(days=last.lag_days)).isoformat()
    with pytest.raises(ValueError, match="at least 1"):
        Scenario.many(0)


def test_facturation(sim, http):
    token = login(http, sim)
    body = get(http, sim, "/abonnements/4718203/facturation", token).json()
    assert list(body) == [
        "numero_pds",
        "date_debut_abonnement",
        "numero_client",
        "titulaire",
        "solde",
        "mode_paiement",
        "mode_releve",
        "dernier_index_releve",
        "date_index_releve",
        "marque",
    ]
    assert body["numero_pds"] == "003KQZ7"
    assert body["date_debut_abonnement"] == "2019-03-14"
    assert body["date_index_releve"] == "2026-03-31"
    april_first = by_date(daily(http, sim, token, 2026, 4).json())[date(2026, 4, 1)]
    assert body["dernier_index_releve"] == april_first["index"]["litre"] // 1000
    garden = get(http, sim, "/abonnements/4718204/facturation", token).json()
    assert garden["numero_pds"] == "003KQZ8"


def test_unknown_contracts_are_404(sim, http):
    token = login(http, sim)
    spec = spec_of(sim)
    for path in (
        "/abonnements/999/facturation",
        "/abonnements/abc/facturation",
        "/abonnements/999/facturation/mensualisation/plan",
        "/consommations/999/journalieres",
        "/consommations/999/mensuelles",
    ):
        response = get(http, sim, path, token, series_params(spec, 2026, 6))
        assert response.status_code == 404, path
        assert "message" in response.json()
    assert get(http, sim, "/alertes/003KQZ7", token, {"abo_id": 999}).status_code == 404
    unknown = get(http, sim, "/nowhere", token)
    assert unknown.status_code == 404
    assert sim.request_log[-1].route == "unknown"
    assert sum(sim.stats().values()) == 7  # the login and the 6 routed calls


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({}, 200),
        ({"mois": "06"}, 200),
        ({"annee": None}, 400),
        ({"mois": None}, 400),
        ({"numero-pds": None}, 400),
        ({"date-debut-abonnement": None}, 400),
        ({"annee": "26"}, 400),
        ({"annee": "20266"}, 400),
        ({"mois": "0"}, 400),
        ({"mois": "13"}, 400),
        ({"mois": "juin"}, 400),
        ({"numero-pds": "003KQZ8"}, 400),
        ({"date-debut-abonnement": "2019-03-15"}, 400),
        ({"date-debut-abonnement": "14/03/2019"}, 400),
    ],
)
def test_journalieres_parameters(sim, http, change, status):
    params = series_params(spec_of(sim), 2026, 6) | change
    params = {k: v for k, v in params.items() if v is not None}
    response = get(http, sim, "/consommations/4718203/journalieres", login(http, sim), params)
    assert response.status_code == status
    if status == 400:
        assert response.json()["message"]


def test_mensuelles_parameters(sim, http):
    token = login(http, sim)
    params = series_params(spec_of(sim), 2026)
    assert get(http, sim, "/consommations/4718203/mensuelles", token, params).status_code == 200
    for name in ("annee", "numero-pds", "date-debut-abonnement"):
        partial = {k: v for k, v in params.items() if k != name}
        response = get(http, sim, "/consommations/4718203/mensuelles", token, partial)
        assert response.status_code == 400, name


def test_future_and_before_start_periods_are_empty(sim, http):
    token = login(http, sim)
    assert daily(http, sim, token, 2026, 7).json() == []
    assert daily(http, sim, token, 2027, 1).json() == []
    assert monthly(http, sim, token, 2027).json() == []
    assert not any(entry.before_contract_start for entry in sim.request_log)
    assert daily(http, sim, token, 2019, 2).json() == []
    assert sim.request_log[-1].before_contract_start
    assert monthly(http, sim, token, 2018).json() == []
    assert sim.request_log[-1].before_contract_start
    start_month = daily(http, sim, token, 2019, 3).json()
    assert not sim.request_log[-1].before_contract_start
    assert start_month[0]["date_releve"] == "2019-03-14"
    assert start_month[0]["index"]["litre"] == 500_000
    assert len(start_month) == 18
    first_year = monthly(http, sim, token, 2019).json()
    assert [row["mois"] for row in first_year] == list(range(3, 13))


def test_alertes_and_plan(make_sim):
    garden = replace(Scenario().contracts[1], alerts=False, payment_plan=False)
    sim = make_sim(Scenario(today=TODAY, contracts=(Scenario().contracts[0], garden)))
    with requests.Session() as http:
        token = login(http, sim)
        assert get(http, sim, "/alertes/003KQZ7", token, {"abo_id": HOUSE}).json() == ALERTS_SAMPLE
        assert get(http, sim, "/alertes/003KQZ8", token, {"abo_id": HOUSE}).status_code == 400
        assert get(http, sim, "/alertes/003KQZ7", token).status_code == 400
        no_alerts = get(http, sim, "/alertes/003KQZ8", token, {"abo_id": GARDEN})
        assert no_alerts.status_code == 204
        assert no_alerts.content == b""
        plan = get(http, sim, "/abonnements/4718203/facturation/mensualisation/plan", token)
        assert plan.json() == {
            "prelevements_echeancier": [
                {"date": "2026-04-15", "montant": 38.0, "etat_prelevement": "DONE"},
                {"date": "2026-05-15", "montant": 38.0, "etat_prelevement": "DONE"},
                {"date": "2026-06-15", "montant": 38.0, "etat_prelevement": "WAITING"},
            ]
        }
        no_plan = get(http, sim, "/abonnements/4718204/facturation/mensualisation/plan", token)
        assert no_plan.status_code == 204
    assert sim.stats()["alertes"] == 4
    assert sim.stats()["plan"] == 2


def test_communes_nationales_needs_no_token(sim, http):
    pibrac = get(http, sim, "/communes-nationales", params={"q": "31820"})
    assert pibrac.json() == [
        {
            "numero_commune": 42904,
            "numero_quartier": 0,
            "libelle": "PIBRAC",
            "code_insee": "31417",
            "code_postal": "31820",
            "url_redirection": "https://eaudetm.monespace.eau.veolia.fr?numero_commune=42904&numero_quartier=0",
            "type_commune": "REDIRIGE",
        }
    ]
    kinds = {
        get(http, sim, "/communes-nationales", params={"q": q}).json()[0]["type_commune"]
        for q in ("montpellier", "brest", "66000", "Pibrac")
    }
    assert kinds == {"NON_REDIRIGE", "NON_DESSERVIE", "EN_MAINTENANCE", "REDIRIGE"}
    assert get(http, sim, "/communes-nationales", params={"q": "zzz"}).json() == []
    assert get(http, sim, "/communes-nationales").status_code == 400
    assert sim.stats()["communes-nationales"] == 7


def test_backend_refuses_other_methods(sim, http):
    headers = {"Authorization": f"Bearer {login(http, sim)}"}
    response = http.post(
        sim.api_url + "/abonnements/4718203/facturation", headers=headers, timeout=5
    )
    assert response.status_code == 405


# -- generated data --------------------------------------------------------------------------


def test_start_of_day_identity_and_litre_range(sim, http):
    token = login(http, sim)
    rows = daily(http, sim, token, 2026, 4).json() + daily(http, sim, token, 2026, 5).json()
    assert len(rows) == 61
    for row, following in itertools.pairwise(rows):
        assert row["index"]["litre"] + row["consommation"]["litre"] == following["index"]["litre"]
        assert row["fiabilite_index"] == "MESURE"
        assert 75 <= row["consommation"]["litre"] <= 225
        assert row["consommation"]["m3"] == round(row["consommation"]["litre"] / 1000, 3)
        assert row["index"]["m3"] == round(row["index"]["litre"] / 1000, 3)
    assert list(rows[0]) == ["date_releve", "consommation", "index", "fiabilite_index"]
    assert len({row["consommation"]["litre"] for row in rows}) > 20


def test_end_of_day_convention(make_sim):
    sim = make_sim(Scenario(today=TODAY, index_convention="end_of_day"))
    start_of_day = Simulator(Scenario(today=TODAY))
    with requests.Session() as http:
        rows = daily(http, sim, login(http, sim), 2026, 5).json()
    for previous, row in itertools.pairwise(rows):
        assert previous["index"]["litre"] + row["consommation"]["litre"] == row["index"]["litre"]
    reference = start_of_day.daily_rows(HOUSE, date(2026, 5, 1), date(2026, 5, 31))
    assert [r["consommation"] for r in rows] == [r["consommation"] for r in reference]
    assert rows[0]["index"]["litre"] == reference[1]["index"]["litre"]


def test_lag_no_row_for_today_and_the_clock_moving(sim, http):
    token = login(http, sim)
    rows = daily(http, sim, token, 2026, 6).json()
    assert rows[-1]["date_releve"] == "2026-06-08"
    assert len(rows) == 8
    sim.set_now(datetime(2026, 6, 11, 7, 0, tzinfo=PARIS))
    token = login(http, sim)
    assert daily(http, sim, token, 2026, 6).json()[-1]["date_releve"] == "2026-06-09"
    assert daily(http, sim, token, 2026, 6).json()[:8] == rows
    sim.set_now(datetime(2026, 7, 1, 12, 0, tzinfo=PARIS))
    assert daily(http, sim, login(http, sim), 2026, 7).json() == []
    june = daily(http, sim, login(http, sim), 2026, 6).json()
    assert june[-1]["date_releve"] == "2026-06-29"


def test_lag_zero_still_never_serves_today(make_sim):
    house = replace(Scenario().contracts[0], lag_days=0)
    sim = make_sim(Scenario(today=TODAY, contracts=(house,)))
    with requests.Session() as http:
        rows = daily(http, sim, login(http, sim), 2026, 6).json()
    assert rows[-1]["date_releve"] == "2026-06-09"


def test_estimated_run_shape(make_sim):
    run = (date(2026, 5, 10), date(2026, 5, 12))
    house = replace(Scenario().contracts[0], estimated_runs=(run,))
    sim = make_sim(Scenario(today=TODAY, contracts=(house,)))
    truth = Simulator(Scenario(today=TODAY)).daily_rows(HOUSE, date(2026, 5, 1), date(2026, 5, 31))
    with requests.Session() as http:
        token = login(http, sim)
        rows = by_date(daily(http, sim, token, 2026, 5).json())
        may = {r["mois"]: r for r in monthly(http, sim, token, 2026).json()}
    true = by_date(truth)
    run_days = [date(2026, 5, d) for d in (10, 11, 12)]
    total = sum(true[d]["consommation"]["litre"] for d in run_days)
    litres = [rows[d]["consommation"]["litre"] for d in run_days]
    assert litres[:2] == [total // 3, total // 3]
    assert sum(litres) == total
    assert {rows[d]["fiabilite_index"] for d in run_days} == {"ESTIME"}
    assert {rows[d]["index"]["litre"] for d in run_days} == {true[run[0]]["index"]["litre"]}
    after = rows[date(2026, 5, 13)]
    assert after["fiabilite_index"] == "MESURE"
    assert after["index"] == true[date(2026, 5, 13)]["index"]
    assert rows[date(2026, 5, 9)] == true[date(2026, 5, 9)]
    assert may[5]["fiabilite_conso"] == "ESTIME"
    assert may[4]["fiabilite_conso"] == "MESURE"
    assert may[5]["consommation"]["litre"] == sum(r["consommation"]["litre"] for r in truth)


def test_gap_is_omitted_but_counted(make_sim):
    gap = date(2026, 5, 20)
    house = replace(Scenario().contracts[0], gaps=(gap,))
    sim = make_sim(Scenario(today=TODAY, contracts=(house,)))
    with requests.Session() as http:
        token = login(http, sim)
        rows = by_date(daily(http, sim, token, 2026, 5).json())
        june_first = daily(http, sim, token, 2026, 6).json()[0]
        months = {r["mois"]: r for r in monthly(http, sim, token, 2026).json()}
    assert gap not in rows
    assert len(rows) == 30
    before, after = rows[date(2026, 5, 19)], rows[date(2026, 5, 21)]
    gap_litres = (
        after["index"]["litre"] - before["index"]["litre"] - before["consommation"]["litre"]
    )
    assert 75 <= gap_litres <= 225
    served = sum(r["consommation"]["litre"] for r in rows.values())
    assert months[5]["consommation"]["litre"] == served + gap_litres
    first_may = rows[date(2026, 5, 1)]["index"]["litre"]
    assert months[5]["consommation"]["litre"] == june_first["index"]["litre"] - first_may
    assert months[5]["fiabilite_conso"] == "MESURE"


def test_monthly_rows_are_the_sum_of_daily_rows(sim, http):
    token = login(http, sim)
    months = monthly(http, sim, token, 2026).json()
    assert [row["mois"] for row in months] == [1, 2, 3, 4, 5, 6]
    assert list(months[0]) == ["annee", "mois", "consommation", "fiabilite_conso"]
    for row in months:
        rows = daily(http, sim, token, 2026, row["mois"]).json()
        assert row["consommation"]["litre"] == sum(r["consommation"]["litre"] for r in rows)
        assert row["consommation"]["m3"] == round(row["consommation"]["litre"] / 1000, 3)
    assert sim.expected_billed_m3(HOUSE_METER) == months[-1]["consommation"]["m3"]
    last_year = monthly(http, sim, token, 2025).json()
    assert [row["mois"] for row in last_year] == list(range(1, 13))


def test_telemetry_off_serves_empty_series(make_sim):
    garden = replace(Scenario().contracts[1], telemetry=False)
    sim = make_sim(Scenario(today=TODAY, contracts=(Scenario().contracts[0], garden)))
    with requests.Session() as http:
        token = login(http, sim)
        assert daily(http, sim, token, 2026, 6, contract=GARDEN).json() == []
        assert monthly(http, sim, token, 2026, contract=GARDEN).json() == []
        assert daily(http, sim, token, 2026, 6).json() != []
    assert sim.expected_latest("I21FA104733") is None
    assert sim.expected_billed_m3("I21FA104733") is None
    assert sim.daily_rows(GARDEN, date(2026, 1, 1), TODAY) == []


def test_same_seed_same_data_other_seed_other_data():
    first, second = Simulator(Scenario(today=TODAY)), Simulator(Scenario(today=TODAY))
    other = Simulator(Scenario(today=TODAY, seed=7))
    span = (date(2025, 1, 1), date(2026, 6, 30))
    assert first.daily_rows(HOUSE, *span) == second.daily_rows(HOUSE, *span)
    assert first.daily_rows(HOUSE, *span) != other.daily_rows(HOUSE, *span)
    assert first.daily_rows(HOUSE, *span) != first.daily_rows(GARDEN, *span)


def test_sample_of_section_4_3_in_spirit(make_sim):
    """Fetched on 2026-06-10: lag 2, 06-04/06-05 estimated, 06-07 missing (§4.3, §4.4, §6.1)."""
    sim = make_sim(Scenario.demo(today=TODAY))
    with requests.Session() as http:
        assert cognito(http, sim, password_payload(sim, USERNAME="x@y.z")).ok
        token = login(http, sim)
        rows = daily(http, sim, token, 2026, 6).json()
        months = monthly(http, sim, token, 2026).json()
    assert [r["date_releve"][-2:] for r in rows] == ["01", "02", "03", "04", "05", "06", "08"]
    flags = [r["fiabilite_index"] for r in rows]
    assert flags == ["MESURE"] * 3 + ["ESTIME"] * 2 + ["MESURE"] * 2
    d = {int(r["date_releve"][-2:]): r for r in rows}

    def litre(day):
        return d[day]["consommation"]["litre"]

    def index(day):
        return d[day]["index"]["litre"]

    assert index(1) + litre(1) == index(2)
    assert index(3) + litre(3) == index(4) == index(5)
    assert index(6) == index(4) + litre(4) + litre(5)
    assert abs(litre(4) - litre(5)) <= 1
    used_on_7 = index(8) - index(6) - litre(6)
    assert 75 <= used_on_7 <= 225
    june = months[-1]
    assert (june["annee"], june["mois"], june["fiabilite_conso"]) == (2026, 6, "ESTIME")
    assert (
        june["consommation"]["litre"] == sum(r["consommation"]["litre"] for r in rows) + used_on_7
    )
    assert sim.expected_latest(HOUSE_METER) == {
        "date": date(2026, 6, 8),
        "litre": litre(8),
        "index": index(8),
        "fiabilite": "MESURE",
    }
    assert sim.expected_billed_m3(HOUSE_METER) == june["consommation"]["m3"]
    assert sim.daily_rows(HOUSE, date(2026, 6, 1), date(2026, 6, 30)) == rows


def test_expected_values_follow_gaps_runs_and_january(make_sim):
    house = replace(
        Scenario().contracts[0],
        gaps=(date(2026, 6, 8),),
        estimated_runs=((date(2026, 6, 6), date(2026, 6, 7)),),
    )
    sim = Simulator(Scenario(today=TODAY, contracts=(house,)))
    latest = sim.expected_latest(HOUSE_METER)
    assert latest is not None
    with pytest.raises(KeyError):
        sim.expected_latest("UNKNOWN")
    brand_new = replace(Scenario().contracts[0], date_debut_abonnement=TODAY)
    fresh = Simulator(Scenario(today=TODAY, contracts=(brand_new,)))
    assert fresh.expected_latest(HOUSE_METER) is None
    assert fresh.expected_billed_m3(HOUSE_METER) is None
    assert (latest["date"], latest["fiabilite"]) == (date(2026, 6, 7), "ESTIME")
    january = Simulator(Scenario(today=date(2026, 1, 2)))
    december = january.daily_rows(HOUSE, date(2025, 12, 1), date(2025, 12, 31))
    assert january.daily_rows(HOUSE, date(2026, 1, 1), date(2026, 1, 31)) == []
    total = sum(r["consommation"]["litre"] for r in december)
    assert january.expected_billed_m3(HOUSE_METER) == round(total / 1000, 3)


# -- faults ----------------------------------------------------------------------------------


def test_status_fault_then_recovery(sim, http):
    token = login(http, sim)
    sim.fail("facturation", status=502, times=1)
    failed = get(http, sim, "/abonnements/4718203/facturation", token)
    assert failed.status_code == 502
    assert failed.json() == {"message": "Bad Gateway"}
    assert get(http, sim, "/abonnements/4718203/facturation", token).status_code == 200
    assert sim.stats()["facturation"] == 2


@pytest.mark.parametrize(
    ("fault", "options", "expected"),
    [
        ("http_500", {}, (500, "application/json")),
        ("http_502", {}, (502, "text/html; charset=utf-8")),
        ("http_502", {"body": "empty"}, (502, None)),
        ("maintenance_html", {}, (503, "text/html; charset=utf-8")),
        ("maintenance_html", {"status": 200}, (200, "text/html; charset=utf-8")),
        ("malformed_json", {}, (200, "application/json")),
        ("rate_limited", {}, (429, "application/json")),
    ],
)
def test_transport_faults_fire_once(sim, http, fault, options, expected):
    status, content_type = expected
    token = login(http, sim)
    sim.fail("journalieres", fault=fault, **options)
    response = daily(http, sim, token, 2026, 6)
    assert response.status_code == status
    assert response.headers.get("Content-Type") == content_type
    if fault == "maintenance_html":
        assert "Site en cours de maintenance" in response.text
    if fault == "malformed_json":
        assert response.text == '[{"date_releve": "2026-06-01",'
        with pytest.raises(ValueError):
            response.json()
    if fault == "http_502" and options:
        assert response.content == b""
    if fault == "rate_limited":
        assert response.json() == {"message": "Too Many Requests"}
        assert "Retry-After" not in response.headers
    assert daily(http, sim, token, 2026, 6).status_code == 200


@pytest.mark.parametrize("retry_after", [7, "Wed, 10 Jun 2026 10:00:30 GMT"])
def test_rate_limited_retry_after(sim, http, retry_after):
    token = login(http, sim)
    sim.fail("*", fault="rate_limited", retry_after=retry_after)
    response = get(http, sim, "/espace-client?type-front=WEB_ORDINATEUR", token)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == str(retry_after)


def test_transport_faults_on_cognito(sim, http):
    sim.fail("cognito", fault="http_500")
    failed = cognito(http, sim, password_payload(sim))
    assert failed.status_code == 500
    assert failed.headers["Content-Type"] == AMZ
    assert cognito(http, sim, password_payload(sim)).ok


def test_empty_fault(sim, http):
    token = login(http, sim)
    sim.fail("journalieres", fault="empty")
    sim.fail("espace-client", fault="empty")
    assert daily(http, sim, token, 2026, 6).json() == []
    assert get(http, sim, "/espace-client?type-front=WEB_ORDINATEUR", token).json() == {
        "contacts": []
    }
    assert daily(http, sim, token, 2026, 6).json() != []


def test_duplicate_day_and_decreasing_index(sim, http):
    token = login(http, sim)
    clean = daily(http, sim, token, 2026, 6).json()
    sim.fail("journalieres", fault="duplicate_day")
    doubled = daily(http, sim, token, 2026, 6).json()
    assert doubled[:-1] == clean
    copy = doubled[-1]
    assert copy["date_releve"] == clean[-1]["date_releve"]
    assert copy["consommation"]["litre"] == clean[-1]["consommation"]["litre"] + 10
    assert copy["consommation"]["m3"] == round(copy["consommation"]["litre"] / 1000, 3)
    assert copy["index"] == clean[-1]["index"]
    sim.fail("journalieres", fault="decreasing_index")
    lowered = daily(http, sim, token, 2026, 6).json()
    assert lowered[-1]["index"]["litre"] == clean[-1]["index"]["litre"] - 1000
    assert lowered[-1]["index"]["m3"] == round(lowered[-1]["index"]["litre"] / 1000, 3)
    assert lowered[:-1] == clean[:-1]
    sim.fail("journalieres", fault="decreasing_index", amount_l=250)
    assert daily(http, sim, token, 2026, 6).json()[-1]["index"]["litre"] == (
        clean[-1]["index"]["litre"] - 250
    )
    assert daily(http, sim, token, 2026, 6).json() == clean


def test_reshaping_fault_waits_for_a_successful_answer(sim, http):
    token = login(http, sim)
    sim.fail("journalieres", fault="duplicate_day")
    params = series_params(spec_of(sim), 2026, 6) | {"mois": "13"}
    assert get(http, sim, "/consommations/4718203/journalieres", token, params).status_code == 400
    rows = daily(http, sim, token, 2026, 6).json()
    assert rows[-1]["date_releve"] == rows[-2]["date_releve"]


def test_times_none_and_times_two(sim, http):
    token = login(http, sim)
    sim.fail("mensuelles", status=503, times=None)
    assert [monthly(http, sim, token, 2026).status_code for _ in range(3)] == [503] * 3
    sim.clear_faults()
    assert monthly(http, sim, token, 2026).status_code == 200
    sim.fail("mensuelles", fault="http_500", times=2)
    assert [monthly(http, sim, token, 2026).status_code for _ in range(3)] == [500, 500, 200]


def test_fault_restricted_to_one_contract(sim, http):
    token = login(http, sim)
    sim.fail("journalieres", fault="http_500", contract=GARDEN)
    sim.fail("alertes", status=503, contract=GARDEN)
    assert daily(http, sim, token, 2026, 6, contract=HOUSE).status_code == 200
    assert get(http, sim, "/alertes/003KQZ7", token, {"abo_id": HOUSE}).status_code == 200
    assert daily(http, sim, token, 2026, 6, contract=GARDEN).status_code == 500
    assert get(http, sim, "/alertes/003KQZ8", token, {"abo_id": GARDEN}).status_code == 503
    assert daily(http, sim, token, 2026, 6, contract=GARDEN).status_code == 200


def test_star_route_spares_cognito_and_refcommunes(sim, http):
    sim.fail("*", status=500, times=None)
    token = login(http, sim)
    assert get(http, sim, "/communes-nationales", params={"q": "brest"}).status_code == 200
    assert get(http, sim, "/abonnements/4718203/facturation", token).status_code == 500
    assert daily(http, sim, token, 2026, 6).status_code == 500


def test_slow_fault_over_http_times_out_and_recovers(sim, http):
    token = login(http, sim)
    sim.fail("journalieres", fault="slow", delay_s=30)
    params = series_params(spec_of(sim), 2026, 6)
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.get(
            sim.api_url + "/consommations/4718203/journalieres",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
            timeout=0.3,
        )
    # The server notices the client hung up and stops waiting long before 30 s.
    wait_until(lambda: sim.in_flight == 0, 5, "the abandoned slow request to end")
    assert sim.request_log[-1].status == 0
    assert daily(http, sim, token, 2026, 6).status_code == 200


def test_fail_rejects_mistakes(sim):
    with pytest.raises(ValueError, match="unknown route"):
        sim.fail("consommations", status=500)
    with pytest.raises(ValueError, match="unknown fault"):
        sim.fail("journalieres", fault="explode")
    with pytest.raises(ValueError, match="no option"):
        sim.fail("journalieres", fault="http_500", delay_s=3)
    with pytest.raises(ValueError, match="no status"):
        sim.fail("journalieres", fault="http_500", status=500)
    with pytest.raises(ValueError, match="never applies"):
        sim.fail("espace-client", fault="decreasing_index")
    with pytest.raises(ValueError, match="never applies"):
        sim.fail("*", fault="wrong_password")
    with pytest.raises(ValueError, match="times"):
        sim.fail("journalieres", status=500, times=0)
    with pytest.raises(ValueError, match="give a fault"):
        sim.fail("journalieres")
    with pytest.raises(ValueError, match="invalid value"):
        sim.fail("journalieres", fault="slow", delay_s="long")
    with pytest.raises(ValueError, match="invalid value"):
        sim.fail("cognito", fault="challenge", challenge_name="SOFTWARE_TOKEN_MFA")
    with pytest.raises(ValueError, match="invalid value"):
        sim.fail("journalieres", fault="rate_limited", retry_after=1.5)
    assert len(FAULTS) == 15


# -- instrumentation -------------------------------------------------------------------------


def test_counters_and_request_log(sim, http):
    assert sim.stats() == dict.fromkeys(ROUTE_KEYS, 0)
    token = login(http, sim)
    get(http, sim, "/espace-client?type-front=WEB_ORDINATEUR", token)
    get(http, sim, "/abonnements/4718203/facturation", token)
    daily(http, sim, token, 2026, 6)
    daily(http, sim, token, 2026, 5)
    monthly(http, sim, token, 2026)
    stats = sim.stats()
    assert list(stats) == list(ROUTE_KEYS)
    assert stats["cognito:USER_PASSWORD_AUTH"] == 1
    assert stats["espace-client"] == 1
    assert stats["facturation"] == 1
    assert stats["journalieres"] == 2
    assert stats["mensuelles"] == 1
    assert sum(stats.values()) == 6
    log = sim.request_log
    assert [e.route for e in log] == [
        "cognito:USER_PASSWORD_AUTH",
        "espace-client",
        "facturation",
        "journalieres",
        "journalieres",
        "mensuelles",
    ]
    entry = log[3]
    assert (entry.method, entry.path, entry.status) == (
        "GET",
        "/consommations/4718203/journalieres",
        200,
    )
    assert entry.query == {
        "annee": "2026",
        "mois": "6",
        "numero-pds": "003KQZ7",
        "date-debut-abonnement": "2019-03-14",
    }
    assert entry.contract == HOUSE
    assert entry.time == datetime(2026, 6, 10, 12, 0, tzinfo=PARIS)
    assert not entry.before_contract_start
    assert log[0].method == "POST"
    assert log[0].path == "/"
    sim.reset()
    assert sim.stats() == dict.fromkeys(ROUTE_KEYS, 0)
    assert sim.request_log == []


def test_max_in_flight_counts_concurrent_requests(sim, http):
    token = login(http, sim)
    assert sim.max_in_flight == 1
    sim.fail("facturation", fault="slow", delay_s=60, times=3)
    outcomes: list[str] = []

    def call() -> None:
        with requests.Session() as session:
            try:
                get(session, sim, "/abonnements/4718203/facturation", token)
                outcomes.append("answered")
            except requests.exceptions.ConnectionError:
                outcomes.append("dropped")

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    wait_until(lambda: sim.in_flight == 3, 5, "three requests in flight")
    assert sim.max_in_flight == 3
    sim.stop()  # ends the slow waits: the connections are dropped
    for thread in threads:
        thread.join(5)
    assert outcomes == ["dropped"] * 3
    assert sim.in_flight == 0
    sim.reset()
    assert sim.max_in_flight == 0


# -- requests adapter ------------------------------------------------------------------------


def adapter_session(sim) -> requests.Session:
    session = requests.Session()
    session.mount("https://", sim.adapter())
    return session


def test_adapter_serves_the_real_urls_without_sockets():
    sim = Simulator(Scenario(today=TODAY))
    with adapter_session(sim) as session:
        login_response = session.post(
            COGNITO_URL,
            data=json.dumps(password_payload(sim)),
            headers={"Content-Type": AMZ, "X-Amz-Target": INITIATE},
            timeout=15,
        )
        assert login_response.status_code == 200
        token = login_response.json()["AuthenticationResult"]["AccessToken"]
        response = session.get(
            f"{BACKEND_URL}/consommations/4718203/journalieres",
            params=series_params(spec_of(sim), 2026, 6),
            headers={"Authorization": f"Bearer {token}"},
            timeout=(15, 15),
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == sim.daily_rows(HOUSE, date(2026, 6, 1), date(2026, 6, 30))
        assert response.reason == "OK"
        refcommunes = session.get(
            "https://prd-ael-sirius-refcommunes.istefr.fr/communes-nationales",
            params={"q": "31820"},
            timeout=15,
        )
        assert refcommunes.json()[0]["libelle"] == "PIBRAC"
    assert sim.stats()["journalieres"] == 1
    assert sim.max_in_flight == 1
    with pytest.raises(RuntimeError, match="not running"):
        _ = sim.base_url


def test_adapter_requires_a_timeout():
    sim = Simulator(Scenario(today=TODAY))
    with adapter_session(sim) as session:
        with pytest.raises(MissingTimeoutError):
            session.get(f"{BACKEND_URL}/espace-client?type-front=WEB_ORDINATEUR")
        with pytest.raises(MissingTimeoutError):
            session.get(f"{BACKEND_URL}/espace-client", timeout=(None, 15))
    assert sim.missing_timeouts == 2
    assert sim.stats()["espace-client"] == 0


def test_adapter_slow_fault_raises_read_timeout_at_once():
    sim = Simulator(Scenario(today=TODAY))
    sim.fail("communes-nationales", fault="slow", delay_s=3600)
    sim.fail("communes-nationales", fault="slow", delay_s=0.5)
    url = "https://prd-ael-sirius-refcommunes.istefr.fr/communes-nationales"
    with adapter_session(sim) as session:
        with pytest.raises(requests.exceptions.ReadTimeout):
            session.get(url, params={"q": "brest"}, timeout=15)
        # A delay below the timeout is not waited for by the adapter: the answer comes.
        assert session.get(url, params={"q": "brest"}, timeout=15).status_code == 200
    assert [e.status for e in sim.request_log] == [0, 200]


def test_handle_waits_out_a_short_slow_fault():
    sim = Simulator(Scenario(today=TODAY))
    sim.fail("communes-nationales", fault="slow", delay_s=0.01)
    status, _, _ = sim.handle("GET", "http://any.host/communes-nationales?q=brest", {}, b"")
    assert status == 200
    assert sim.stats()["communes-nationales"] == 1


def test_handle_is_the_core():
    sim = Simulator(Scenario(today=TODAY))
    status, headers, body = sim.handle(
        "GET", "/communes-nationales?q=perpignan", {"Accept": "*/*"}, b""
    )
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)[0]["type_commune"] == "EN_MAINTENANCE"


# -- clock, scenario, life cycle -------------------------------------------------------------


def test_clock_and_today():
    sim = Simulator(Scenario(today=TODAY))
    assert sim.now() == datetime(2026, 6, 10, 12, 0, tzinfo=PARIS)
    sim.set_now(datetime(2026, 6, 10, 22, 30, tzinfo=UTC))
    assert sim.today() == date(2026, 6, 11)  # already the 11th in Paris
    with pytest.raises(ValueError, match="aware"):
        sim.set_now(datetime(2026, 6, 10, 12, 0))  # noqa: DTZ001
    injected = Simulator(clock=lambda: datetime(2026, 6, 10, 12, 0, tzinfo=UTC))
    with pytest.raises(RuntimeError, match="injected"):
        injected.set_now(datetime(2026, 6, 11, 12, 0, tzinfo=UTC))
    live = Simulator()
    before = datetime.now(PARIS)
    live.advance(timedelta(days=2))
    assert live.now() - before >= timedelta(days=2)


def test_scenario_validation_and_secret_free_repr():
    house, garden = Scenario().contracts
    with pytest.raises(ValueError, match="unique"):
        Scenario(contracts=(house, replace(garden, id_abonnement=house.id_abonnement)))
    with pytest.raises(ValueError, match="401 or 403"):
        Scenario(expired_status=402)
    with pytest.raises(ValueError, match="estimated run"):
        replace(house, estimated_runs=((date(2026, 1, 2), date(2026, 1, 1)),))
    with pytest.raises(ValueError, match="negative"):
        replace(house, lag_days=-1)
    with pytest.raises(ValueError, match="token_lifetime_s"):
        Scenario(token_lifetime_s=0)
    text = repr(Scenario())
    assert "s3cret" not in text
    assert "jean.dupont" not in text
    assert Scenario().refresh_token not in text


def test_demo_scenario():
    demo = Scenario.demo(today=TODAY)
    assert demo.accept_any_credentials
    assert [c.numero_compteur for c in demo.contracts] == ["I19FA051732", "I21FA104733"]
    assert all(c.lag_days == 2 for c in demo.contracts)
    runs = [run for c in demo.contracts for run in c.estimated_runs]
    gaps = [gap for c in demo.contracts for gap in c.gaps]
    assert len(runs) == 1
    assert len(gaps) == 1
    recent = TODAY - timedelta(days=10)
    assert all(recent <= day < TODAY for day in (*runs[0], gaps[0]))
    assert Scenario.demo().today is None


def test_stop_start_and_context_manager():
    with Simulator(Scenario(today=TODAY)) as sim:
        first_url = sim.base_url
        with requests.Session() as http:
            assert get(http, sim, "/communes-nationales", params={"q": "brest"}).ok
        with pytest.raises(RuntimeError, match="already running"):
            sim.start()
        sim.stop()
        sim.stop()
        sim.start()
        assert sim.base_url.startswith("http://127.0.0.1:")
        assert sim.auth_url == sim.api_url == sim.base_url
        with requests.Session() as http:
            assert get(http, sim, "/communes-nationales", params={"q": "brest"}).ok
    assert first_url.startswith("http://127.0.0.1:")
