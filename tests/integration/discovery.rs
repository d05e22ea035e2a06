//! Discovery documents a standard wallet library follows to the token endpoint.

use serde_json::Value;

use crate::app::{self, GRANT};

async fn get_json(app: &app::TestApp, path: &str) -> Value {
    let r = app.http().get(app.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{path}"
    );
    r.json().await.unwrap()
}

#[tokio::test]
async fn metadata_links_offer_issuer_token_endpoint_and_jwks() {
    let app = app::builder().start().await;
    let offer = app.offer_with_pin().await.0;
    let credential_offer = app::offer_json(&offer);
    let issuer = credential_offer["credential_issuer"].as_str().unwrap();

    // A wallet starts from the offer's issuer, as OID4VCI §12.2.2 says.
    let ci = get_json(&app, "/.well-known/openid-credential-issuer").await;
    assert_eq!(ci["credential_issuer"], issuer);
    assert!(ci["credential_configurations_supported"]["UniversityDegree_jwt"].is_object());
    let as_url = ci["authorization_servers"][0].as_str().unwrap();
    let asm = get_json(&app, "/.well-known/oauth-authorization-server").await;
    assert_eq!(
        asm["issuer"], as_url,
        "AS issuer equals the authorization_servers entry"
    );
    assert_eq!(asm["grant_types_supported"][0], GRANT);
    assert_eq!(asm["pre-authorized_grant_anonymous_access_supported"], true);
    for field in ["issuer", "token_endpoint", "jwks_uri"] {
        assert!(
            asm[field].as_str().unwrap().starts_with("https://"),
            "{field}"
        );
    }
    assert!(
        ci["credential_endpoint"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );
    assert_eq!(asm["token_endpoint"], app.url("/oid4vci/token"));

    let jwks = get_json(&app, "/.well-known/jwks.json").await;
    let key = &jwks["keys"][0];
    assert_eq!(key["use"], "sig");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["kty"], "OKP");
    assert!(key.get("d").is_none(), "no private part");
    // RFC 7638: SHA-256 over the required members, sorted, no whitespace.
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        key["x"].as_str().unwrap()
    );
    use base64::Engine as _;
    use sha2::Digest as _;
    let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(canonical.as_bytes()));
    assert_eq!(key["kid"], thumbprint);

    let health = get_json(&app, "/healthz").await;
    assert_eq!(health["status"], "ok");
    let ready = get_json(&app, "/readyz").await;
    assert_eq!(ready["hsm"], "ok");
    assert_eq!(ready["database"], "ok");

    let r = app.http().get(app.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// Browser wallets may call the token endpoint and read the metadata from
/// another origin; the admin API gives other sites' scripts nothing.
#[tokio::test]
async fn cors_for_wallet_endpoints_only() {
    let app = app::builder().start().await;
    let preflight = |path: &str| {
        app.http()
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("origin", "https://wallet.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type, dpop, oauth-client-attestation, oauth-client-attestation-pop",
            )
            .send()
    };
    let r = preflight("/oid4vci/token").await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        allowed.contains("dpop") && allowed.contains("oauth-client-attestation-pop"),
        "{allowed}"
    );
    let r = preflight("/oid4vci/nonce").await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let r = app
        .http()
        .get(app.url("/.well-known/jwks.json"))
        .header("origin", "https://wallet.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("dpop-nonce"), "{exposed}");

    let r = preflight("/v1/openid/offers/pre-authorized").await.unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    let r = app
        .http()
        .get(app.url("/v1/openid/offers"))
        .header("origin", "https://evil.example")
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn the_nonce_endpoint_gives_fresh_unstored_nonces() {
    let app = app::builder().start().await;
    let issuer = get_json(&app, "/.well-known/openid-credential-issuer").await;
    assert_eq!(issuer["nonce_endpoint"], app.url("/oid4vci/nonce"));
    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        let r = app
            .http()
            .post(app.url("/oid4vci/nonce"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["cache-control"], "no-store");
        let body: Value = r.json().await.unwrap();
        let nonce = body["c_nonce"].as_str().unwrap().to_owned();
        assert!(nonce.len() >= 22, "at least 128 bits");
        assert!(seen.insert(nonce), "every nonce is new");
    }
}
