"""[auth] settings: each method's required keys, secrets kept out of the file, one-line errors."""

from __future__ import annotations

import re
import ssl
import tomllib
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from batcher.auth import CredentialToken, StaticToken, ca_bundle_path, ssl_context, token_source
from batcher.config import AuthSettings, Settings, load_settings
from batcher.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
TENANT = "11111111-2222-4333-8444-555555555555"
APP = "6a1c7c6e-0b4e-4f4e-9a57-3c2d7f0e9b11"
SECRET = "Qx8~kV2.literal-secret-in-config_0123456789"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "BATCHER_CLIENT_SECRET",
        "BATCHER_CERTIFICATE_PASSWORD",
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "MSI_ENDPOINT",
        "IMDS_ENDPOINT",
        "AZURE_FEDERATED_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)


def load(tmp_path: Path, auth: str) -> Settings:
    path = tmp_path / "config.toml"
    path.write_text(f"[auth]\n{auth}\n", encoding="utf-8")
    return load_settings(path)


def config_error(tmp_path: Path, auth: str) -> str:
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, auth)
    message = str(refused.value)
    assert "\n" not in message
    return message


def build(**values: Any) -> ConfigError:
    settings = AuthSettings(**{"tenant_id": TENANT, "client_id": APP, **values})
    with pytest.raises(ConfigError) as refused:
        token_source(settings, simulator=False)
    assert "\n" not in str(refused.value)
    return refused.value


# -- secrets never in the config file ------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "where"),
    [
        ("client_secret", "client_secret_env"),
        ("secret", "client_secret_env"),
        ("Client_Secret", "client_secret_file"),
        ("password", "certificate_password_env"),
        ("certificate_password", "certificate_password_env"),
        ("token", "token_env"),
        ("access_token", "token_env"),
    ],
)
def test_a_literal_secret_in_the_config_is_refused_without_echoing_it(
    tmp_path: Path, key: str, where: str
) -> None:
    message = config_error(tmp_path, f'method = "client_secret"\n{key} = "{SECRET}"')
    assert f"[auth]: {key} must not be written in the config file" in message
    assert where in message
    assert SECRET not in message


@pytest.mark.parametrize("key", ["client_secret_env", "token_env", "certificate_password_env"])
def test_a_secret_pasted_where_a_variable_name_belongs_is_refused_without_echoing_it(
    tmp_path: Path, key: str
) -> None:
    message = config_error(tmp_path, f'{key} = "{SECRET}"')
    assert f"{key} must be the NAME of an environment variable" in message
    assert SECRET not in message


def test_the_settings_repr_holds_no_secret_even_when_refused() -> None:
    with pytest.raises(ValueError) as refused:
        AuthSettings.model_validate({"client_secret": SECRET})
    assert SECRET not in str(refused.value)
    assert SECRET not in repr(refused.value)


# -- what each method needs ----------------------------------------------------------------------
TENANT_HINT = 'tenant_id = "<Directory (tenant) ID>"'
CLIENT_HINT = 'client_id = "<Application (client) ID of the app registration>"'
CERT_HINT = 'certificate_path = "<PEM or PFX file with the private key>"'


@pytest.mark.parametrize(
    ("auth", "needs"),
    [
        ('method = "client_secret"\nclient_id = "app"', TENANT_HINT),
        (
            'method = "client_secret"\ntenant_id = "contoso.onmicrosoft.com"',
            CLIENT_HINT,
        ),
        ('method = "certificate"\nclient_id = "app"', f"{TENANT_HINT} and {CERT_HINT}"),
        (f'method = "certificate"\ntenant_id = "{TENANT}"', f"{CLIENT_HINT} and {CERT_HINT}"),
        ('method = "device_code"', TENANT_HINT),
    ],
    ids=["secret-no-tenant", "secret-no-client", "cert-no-tenant", "cert-no-client", "device"],
)
def test_a_method_without_its_keys_says_which_to_set(tmp_path: Path, auth: str, needs: str) -> None:
    method = auth.split('"')[1]
    assert config_error(tmp_path, auth) == (
        f"{tmp_path / 'config.toml'}: [auth]: method = {method!r} needs {needs}; "
        "fix it in the config"
    )


@pytest.mark.parametrize(
    "auth",
    [
        'method = "managed_identity"',
        'method = "managed_identity"\nclient_id = "user-assigned-client-id"',
        'method = "azure_cli"',
        f'method = "device_code"\ntenant_id = "{TENANT}"',
        "",
    ],
)
def test_methods_that_need_nothing_more_load(tmp_path: Path, auth: str) -> None:
    assert load(tmp_path, auth).auth.method in {
        "managed_identity",
        "azure_cli",
        "device_code",
        "token",
    }


def test_a_tenant_must_be_a_guid_or_a_domain(tmp_path: Path) -> None:
    message = config_error(tmp_path, 'tenant_id = "contoso tenant"')
    assert "[auth] tenant_id: must be the tenant's GUID or a domain" in message


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("login.microsoftonline.us", "https://login.microsoftonline.us"),
        ("https://127.0.0.1:8443/", "https://127.0.0.1:8443"),
    ],
)
def test_authority_host_is_an_https_host(tmp_path: Path, value: str, stored: str) -> None:
    assert load(tmp_path, f'authority_host = "{value}"').auth.authority_host == stored


@pytest.mark.parametrize(
    "value", ["http://127.0.0.1:8080", "https://login.example/tenant", "ftp://x"]
)
def test_authority_host_refuses_plain_http_and_paths(tmp_path: Path, value: str) -> None:
    message = config_error(tmp_path, f'authority_host = "{value}"')
    assert "[auth] authority_host: must be an https host" in message


def test_the_example_config_documents_every_auth_key() -> None:
    example = (REPO / "config.example.toml").read_text(encoding="utf-8")
    section = example.split("[auth]", 1)[1].split("\n[", 1)[0]
    for key in AuthSettings.model_fields:
        assert re.search(rf"^#?\s*{key} = ", section, re.MULTILINE), key
    assert tomllib.loads(example)["auth"]["method"] == "token"
    assert load_settings(REPO / "config.example.toml").auth == AuthSettings()


# -- what token_source checks before any sign-in -------------------------------------------------
def test_the_simulator_and_the_token_method_need_no_sign_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert isinstance(token_source(AuthSettings(), simulator=True), StaticToken)
    monkeypatch.setenv("MY_TOKEN", "Bearer abc.def.ghi")
    tokens = token_source(AuthSettings(token_env="MY_TOKEN"), simulator=False)
    assert isinstance(tokens, StaticToken) and tokens.value == "abc.def.ghi"


def test_a_missing_secret_variable_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    error = build(method="client_secret", client_secret_env="IR_APP_SECRET")
    assert str(error).startswith(
        "[auth] method = 'client_secret' needs the secret in $IR_APP_SECRET"
    )
    assert "client_secret_file" in str(error)


def test_the_secret_can_come_from_a_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n", encoding="utf-8")
    tokens = token_source(
        AuthSettings(
            method="client_secret",
            tenant_id=TENANT,
            client_id=APP,
            client_secret_file=str(secret_file),
        ),
        simulator=False,
    )
    assert isinstance(tokens, CredentialToken)
    assert SECRET not in repr(tokens)
    tokens.close()


@pytest.mark.parametrize("kind", ["missing", "directory", "empty"])
def test_an_unusable_secret_file_is_refused_without_echoing_its_path(
    tmp_path: Path, kind: str
) -> None:
    path = {"missing": tmp_path / SECRET, "directory": tmp_path, "empty": tmp_path / "empty"}[kind]
    if kind == "empty":
        path.write_text("\n", encoding="utf-8")
    error = build(method="client_secret", client_secret_file=str(path))
    assert str(error).startswith("[auth] client_secret_file: ")
    assert SECRET not in str(error)
    assert str(tmp_path) not in str(error)


# -- certificates --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    rsa = ca.issue_cert("app.batcher.test", key_type=trustme.KeyType.RSA)
    ec = ca.issue_cert("ec.batcher.test", key_type=trustme.KeyType.ECDSA)
    key = serialization.load_pem_private_key(rsa.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"right-password"),
    )
    files = {
        "rsa": rsa.private_key_and_cert_chain_pem.bytes(),
        "ec": ec.private_key_and_cert_chain_pem.bytes(),
        "encrypted": encrypted + rsa.cert_chain_pems[0].bytes(),
        "no-key": rsa.cert_chain_pems[0].bytes(),
        "garbage": b"\x00\x01 not a certificate",
    }
    paths = {}
    for name, data in files.items():
        paths[name] = where / f"{name}.pem"
        paths[name].write_bytes(data)
    return paths


def cert_error(path: Path) -> str:
    return str(build(method="certificate", certificate_path=str(path)))


def test_a_readable_rsa_pem_certificate_is_accepted(certs: dict[str, Path]) -> None:
    tokens = token_source(
        AuthSettings(
            method="certificate",
            tenant_id=TENANT,
            client_id=APP,
            certificate_path=str(certs["rsa"]),
        ),
        simulator=False,
    )
    assert isinstance(tokens, CredentialToken)
    tokens.close()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("missing", "cannot read it (No such file or directory)"),
        ("directory", "cannot read it (Is a directory)"),
        ("garbage", "not a PEM (private key + certificate) or PFX file it can open"),
        ("no-key", "the PEM file has no private key"),
        ("ec", "Entra ID needs an RSA key"),
        ("encrypted", "the private key is encrypted; export its password in "),
    ],
)
def test_an_unusable_certificate_says_what_is_wrong(
    certs: dict[str, Path], tmp_path: Path, name: str, reason: str
) -> None:
    path = {"missing": tmp_path / "nope.pem", "directory": tmp_path}.get(name) or certs[name]
    message = cert_error(path)
    assert message.startswith("[auth] certificate_path: ")
    assert reason in message


def test_a_wrong_certificate_password_is_named_but_not_shown(
    certs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IR_CERT_PASSWORD", "wrong-password-value")
    error = build(
        method="certificate",
        certificate_path=str(certs["encrypted"]),
        certificate_password_env="IR_CERT_PASSWORD",
    )
    assert "the password in $IR_CERT_PASSWORD does not open it" in str(error)
    assert "wrong-password-value" not in str(error)


@pytest.mark.parametrize("kind", ["missing", "not-pem", "malformed"])
def test_an_unusable_ca_bundle_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setenv("BATCHER_CLIENT_SECRET", SECRET)
    bundle = tmp_path / "ca.pem"
    if kind == "not-pem":
        bundle.write_text("hello", encoding="utf-8")
    if kind == "malformed":
        bundle.write_text(
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
            encoding="utf-8",
        )
    error = build(method="client_secret", ca_bundle=str(bundle))
    expected = {
        "missing": "cannot read it",
        "not-pem": "no PEM certificate in it",
        "malformed": "a certificate in it is not valid PEM",
    }[kind]
    assert str(error).startswith(f"[auth] ca_bundle {bundle}: {expected}")
    assert "sign-in and Graph" in str(error)
    # The Graph client's context is refused with the same message, before any connection.
    for check in (ca_bundle_path, ssl_context):
        with pytest.raises(ConfigError) as refused:
            check(str(bundle))
        assert str(refused.value) == str(error)


def test_a_ca_bundle_gives_its_absolute_path_and_a_context_that_trusts_only_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.chdir(tmp_path)
    assert ca_bundle_path("ca.pem") == str(tmp_path.resolve() / "ca.pem")
    context = ssl_context("ca.pem")
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    ca_der = ssl.PEM_cert_to_DER_cert(ca.cert_pem.bytes().decode())
    assert context.get_ca_certs(binary_form=True) == [ca_der]  # not the system's CAs too
    assert ssl_context("") is None  # no setting: the HTTP client keeps the system's CAs


def test_an_unknown_cloud_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHER_CLIENT_SECRET", SECRET)
    settings = AuthSettings(method="client_secret", tenant_id=TENANT, client_id=APP)
    with pytest.raises(ConfigError, match=r"unknown cloud 'china'; use one of global, usgov"):
        token_source(settings, simulator=False, cloud="china")
