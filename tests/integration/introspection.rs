//! `POST /introspect` (RFC 7662): who may ask, what a live token reports,
//! and that a replayed code's token reports inactive.

use serde_json::{Value, json};

use crate::app::{self, GRANT, TestApp};
use crate::proofs::redeem_with;
use crate::token::verify;
use crate::wallet::{Provider, WalletKey, attestation_pop};

async fn introspect(app: &TestApp, key: Option<&str>, token: &str) -> (u16, Value) {
    let mut request = app
        .http()
        .post(app.url("/introspect"))
        .form(&[("token", token)]);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    assert_eq!(r.headers()["cache-control"], "no-store");
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn introspection_reports_live_tokens_and_forgets_replayed_ones() {
    let app = app::builder().start().await;
    let resource = app.new_api_key("introspect");
    let issuer = app.new_api_key("issuer");
    let meta = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(meta["introspection_endpoint"], app.url("/introspect"));

    let key = WalletKey::p256();
    let (_, code, pin) = app.offer_with_pin().await;
    let proof = key.dpop(&app.url("/oid4vci/token"), json!({}));
    let (status, _, body) = redeem_with(&app, &code, &pin, &[("DPoP", &proof)]).await;
    assert_eq!(status, 200);
    let token = body["access_token"].as_str().unwrap().to_owned();

    assert_eq!(introspect(&app, None, &token).await.0, 401);
    assert_eq!(introspect(&app, Some(&issuer), &token).await.0, 403);
    let (status, answer) = introspect(&app, Some(&resource), &token).await;
    assert_eq!(status, 200);
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["sub"], "alice");
    assert_eq!(answer["token_type"], "DPoP");
    assert_eq!(answer["cnf"]["jkt"], key.thumbprint());
    assert_eq!(
        answer["credential_configuration_ids"],
        json!(["UniversityDegree_jwt"])
    );
    assert!(answer["exp"].as_i64().unwrap() > crate::wallet::now());

    // Not ours, or tampered with: inactive, and nothing else said.
    let tampered = format!("{}x", &token[..token.len() - 1]);
    for other in ["garbage", tampered.as_str()] {
        let (status, answer) = introspect(&app, Some(&resource), other).await;
        assert_eq!((status, answer), (200, json!({"active": false})));
    }

    // The code comes back: its token is revoked (off the response path).
    let (status, _) = app
        .redeem_form(&[
            ("grant_type", GRANT),
            ("pre-authorized_code", &code),
            ("tx_code", &pin),
        ])
        .await;
    assert_eq!(status, 400);
    let mut inactive = false;
    for _ in 0..50 {
        let (_, answer) = introspect(&app, Some(&resource), &token).await;
        if answer == json!({"active": false}) {
            inactive = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(inactive, "a replayed code's token must become inactive");
}

/// Every access token carries `client_id` (RFC 9068 §2.2): the attested
/// client's, else the one sent, else `anonymous-wallet` (also for an empty
/// one); introspection reports the same.
#[tokio::test]
async fn every_token_names_its_client() {
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
        .start()
        .await;
    let resource = app.new_api_key("introspect");
    let instance = WalletKey::ed25519();
    let attestation = provider.attest("wallet-app-7", &instance);
    let pop = attestation_pop(&instance, &app.base);

    let mut tokens = Vec::new();
    for sent in [None, Some(""), Some("wallet-sent-1")] {
        let (_, code, pin) = app.offer_with_pin().await;
        let mut form = vec![
            ("grant_type", GRANT),
            ("pre-authorized_code", code.as_str()),
            ("tx_code", pin.as_str()),
        ];
        form.extend(sent.map(|id| ("client_id", id)));
        let (status, body) = app.redeem_form(&form).await;
        assert_eq!(status, 200, "{body}");
        tokens.push((
            body,
            sent.filter(|s| !s.is_empty()).unwrap_or("anonymous-wallet"),
        ));
    }
    let (_, code, pin) = app.offer_with_pin().await;
    let (status, _, body) = redeem_with(
        &app,
        &code,
        &pin,
        &[
            ("OAuth-Client-Attestation", &attestation),
            ("OAuth-Client-Attestation-PoP", &pop),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    tokens.push((body, "wallet-app-7"));

    for (body, client_id) in tokens {
        let token = body["access_token"].as_str().unwrap();
        let claims = verify(&app, token, jsonwebtoken::Algorithm::EdDSA).await;
        assert_eq!(claims["client_id"], client_id, "{claims}");
        let (status, answer) = introspect(&app, Some(&resource), token).await;
        assert_eq!(status, 200);
        assert_eq!(answer["client_id"], client_id, "{answer}");
    }
}
