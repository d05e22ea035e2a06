//! DPoP (RFC 9449) and client attestation at the token endpoint: bound
//! tokens, every refused proof with its error, replay, server nonces, and
//! the switches that require them. A refused proof never consumes the code.

use serde_json::{Value, json};

use crate::app::{self, GRANT, TestApp};
use crate::token::verify;
use crate::wallet::{Provider, WalletKey, attestation_pop, jti, now};

fn token_url(app: &TestApp) -> String {
    app.url("/oid4vci/token")
}

/// Redeems `code`/`pin` with the given extra headers; (status, headers, body).
pub async fn redeem_with(
    app: &TestApp,
    code: &str,
    pin: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = app.http().post(token_url(app)).form(&[
        ("grant_type", GRANT),
        ("pre-authorized_code", code),
        ("tx_code", pin),
    ]);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap())
}

#[tokio::test]
async fn dpop_bound_tokens_carry_the_key_thumbprint_for_es256_and_eddsa() {
    let app = app::builder().start().await;
    let meta = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    let algs = meta["dpop_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    assert!(algs.contains(&json!("ES256")) && algs.contains(&json!("EdDSA")));
    for key in [WalletKey::p256(), WalletKey::ed25519()] {
        let (_, code, pin) = app.offer_with_pin().await;
        let proof = key.dpop(&token_url(&app), json!({}));
        let (status, _, body) = redeem_with(&app, &code, &pin, &[("DPoP", &proof)]).await;
        assert_eq!(status, 200, "{} proof: {body}", key.alg);
        assert_eq!(body["token_type"], "DPoP");
        let claims = verify(
            &app,
            body["access_token"].as_str().unwrap(),
            jsonwebtoken::Algorithm::EdDSA,
        )
        .await;
        assert_eq!(claims["cnf"]["jkt"], key.thumbprint(), "{}", key.alg);
    }
}

#[tokio::test]
async fn bad_proofs_get_invalid_dpop_proof_and_consume_nothing() {
    let app = app::builder().start().await;
    let url = token_url(&app);
    let key = WalletKey::p256();
    let other = WalletKey::ed25519();
    let (_, code, pin) = app.offer_with_pin().await;
    // A proof whose signature is another key's: header of one, signature of the other.
    let forged = {
        let good = key.dpop(&url, json!({}));
        let theirs = other.dpop(&url, json!({}));
        let (head, _) = good.rsplit_once('.').unwrap();
        let (_, sig) = theirs.rsplit_once('.').unwrap();
        format!("{head}.{sig}")
    };
    let cases: Vec<(&str, String)> = vec![
        ("wrong htm", key.dpop(&url, json!({"htm": "GET"}))),
        ("wrong htu", key.dpop(&app.url("/other"), json!({}))),
        ("old iat", key.dpop(&url, json!({"iat": now() - 3600}))),
        ("future iat", key.dpop(&url, json!({"iat": now() + 3600}))),
        (
            "no jti",
            key.sign(
                json!({"typ": "dpop+jwt", "jwk": key.jwk}),
                &json!({"htm": "POST", "htu": url, "iat": now()}),
            ),
        ),
        (
            "wrong typ",
            key.sign(
                json!({"typ": "JWT", "jwk": key.jwk}),
                &json!({"htm": "POST", "htu": url, "iat": now(), "jti": jti()}),
            ),
        ),
        (
            "no jwk",
            key.sign(
                json!({"typ": "dpop+jwt"}),
                &json!({"htm": "POST", "htu": url, "iat": now(), "jti": jti()}),
            ),
        ),
        ("private key in jwk", {
            let mut jwk = key.jwk.clone();
            jwk["d"] = json!("AAAA");
            key.sign(
                json!({"typ": "dpop+jwt", "jwk": jwk}),
                &json!({"htm": "POST", "htu": url, "iat": now(), "jti": jti()}),
            )
        }),
        ("bad signature", forged),
        ("not a JWT", "garbage".to_owned()),
    ];
    for (what, proof) in cases {
        let (status, _, body) = redeem_with(&app, &code, &pin, &[("DPoP", &proof)]).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_dpop_proof")),
            "{what}: {body}"
        );
    }
    // The same proof twice: the second is a replay, whatever the code.
    let proof = key.dpop(&url, json!({}));
    let (status, _, _) = redeem_with(&app, "unknown-code", &pin, &[("DPoP", &proof)]).await;
    assert_eq!(status, 400);
    let (status, _, body) = redeem_with(&app, &code, &pin, &[("DPoP", &proof)]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("replay"),
        "{body}"
    );
    // Two DPoP headers.
    let (status, _, body) = redeem_with(
        &app,
        &code,
        &pin,
        &[
            ("DPoP", &key.dpop(&url, json!({}))),
            ("DPoP", &key.dpop(&url, json!({}))),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_dpop_proof"))
    );
    // A request that cannot redeem (no code) is refused before its proof is
    // looked at: the proof stays unused.
    let unused = key.dpop(&url, json!({}));
    let r = app
        .http()
        .post(token_url(&app))
        .header("DPoP", &unused)
        .form(&[("grant_type", GRANT)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // None of that consumed the code or counted a PIN attempt.
    let (status, _, body) =
        redeem_with(&app, &code, &pin, &[("DPoP", &key.dpop(&url, json!({})))]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn required_dpop_and_server_nonces() {
    let app = app::builder()
        .set("issuance", "require_dpop", true)
        .set("issuance", "require_dpop_nonce", true)
        .start()
        .await;
    let url = token_url(&app);
    let key = WalletKey::ed25519();
    let (_, code, pin) = app.offer_with_pin().await;
    let (status, _, body) = redeem_with(&app, &code, &pin, &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{body}"
    );
    // Without a nonce: use_dpop_nonce, and the nonce to use.
    let (status, headers, body) =
        redeem_with(&app, &code, &pin, &[("DPoP", &key.dpop(&url, json!({})))]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("use_dpop_nonce")),
        "{body}"
    );
    let nonce = headers["dpop-nonce"].to_str().unwrap().to_owned();
    let (status, _, body) = redeem_with(
        &app,
        &code,
        &pin,
        &[("DPoP", &key.dpop(&url, json!({"nonce": "made-up"})))],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("use_dpop_nonce"))
    );
    let (status, headers, body) = redeem_with(
        &app,
        &code,
        &pin,
        &[("DPoP", &key.dpop(&url, json!({"nonce": nonce})))],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    assert!(headers.contains_key("dpop-nonce"));
}

#[tokio::test]
async fn attested_wallets_get_their_client_id_in_the_token() {
    let provider = Provider::new();
    let dir = tempfile::tempdir().unwrap();
    let trusted = dir.path().join("wallet-providers.jwks");
    std::fs::write(&trusted, provider.jwks().to_string()).unwrap();
    let app = app::builder()
        .set(
            "client_attestation",
            "trusted_keys_file",
            trusted.to_str().unwrap(),
        )
        .set("issuance", "require_client_attestation", true)
        .start()
        .await;
    let meta = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    // Attestation is required, so anonymous access is not advertised.
    assert_eq!(
        meta["token_endpoint_auth_methods_supported"],
        json!(["attest_jwt_client_auth"])
    );
    assert_eq!(
        meta["pre-authorized_grant_anonymous_access_supported"],
        false
    );
    let instance = WalletKey::ed25519();
    let attestation = provider.attest("wallet-app-1", &instance);
    let (_, code, pin) = app.offer_with_pin().await;

    // Required: none sent is 401 invalid_client.
    let (status, _, body) = redeem_with(&app, &code, &pin, &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );

    let stranger = Provider::new();
    let cases: Vec<(&str, String, String)> = vec![
        ("untrusted provider", stranger.attest("wallet-app-1", &instance), attestation_pop(&instance, &app.base)),
        ("PoP for another server", attestation.clone(), attestation_pop(&instance, "https://elsewhere.example")),
        ("PoP by another key", attestation.clone(), attestation_pop(&WalletKey::ed25519(), &app.base)),
        ("expired attestation", provider.key.sign(
            json!({"typ": "oauth-client-attestation+jwt", "kid": provider.kid}),
            &json!({"iss": "p", "sub": "wallet-app-1", "exp": now() - 10, "cnf": {"jwk": instance.jwk}}),
        ), attestation_pop(&instance, &app.base)),
    ];
    for (what, a, p) in cases {
        let (status, _, body) = redeem_with(
            &app,
            &code,
            &pin,
            &[
                ("OAuth-Client-Attestation", &a),
                ("OAuth-Client-Attestation-PoP", &p),
            ],
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client_attestation")),
            "{what}: {body}"
        );
    }
    let (status, _, body) = redeem_with(
        &app,
        &code,
        &pin,
        &[("OAuth-Client-Attestation", &attestation)],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client_attestation")),
        "{body}"
    );

    let pop = attestation_pop(&instance, &app.base);
    let headers = [
        ("OAuth-Client-Attestation", attestation.as_str()),
        ("OAuth-Client-Attestation-PoP", pop.as_str()),
    ];
    let (status, _, body) = redeem_with(&app, &code, &pin, &headers).await;
    assert_eq!(status, 200, "{body}");
    let claims = verify(
        &app,
        body["access_token"].as_str().unwrap(),
        jsonwebtoken::Algorithm::EdDSA,
    )
    .await;
    assert_eq!(claims["client_id"], "wallet-app-1");
    // The same PoP again is a replay.
    let (_, code2, pin2) = app.offer_with_pin().await;
    let (status, _, body) = redeem_with(&app, &code2, &pin2, &headers).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client_attestation")),
        "{body}"
    );
}
