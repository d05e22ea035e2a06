//! `GET /oid4vci/credential-offer/{reference}`: a by-reference offer. A
//! wallet gets the Credential Offer JSON; a browser (`Accept: text/html`)
//! gets a page with a QR code of the offer's deep link to scan with a wallet.
//! Anything that can no longer be redeemed is a 404, whatever the reason.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

use super::AppState;
use super::error::ApiError;
use crate::issuance::OfferByReference;
use crate::oid4vci::offer::InputMode;
use crate::secret::OfferReference;

/// The page loads nothing and runs nothing; it sends no referrer, since its
/// own URL is the offer.
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

pub(super) async fn credential_offer(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(reference): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Guessing references is guessing codes: the same per-address budget.
    let admission = state
        .flood
        .admit_now(peer.ip(), "too many failed requests from this address")?;
    let reference = OfferReference::new(reference);
    let Some(offer) = state.notary.offer_by_reference(&reference).await? else {
        return Err(ApiError::not_found(
            "no redeemable offer here: it was redeemed, expired, locked or revoked, or never existed",
        ));
    };
    admission.succeeded();
    let mut response = if wants_html(&headers) {
        let mut r = page(&offer, &state.documents.names).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_CSP),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        r
    } else {
        let mut r = offer.offer_json.to_string().into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    Ok(response)
}

/// Whether the client prefers HTML to JSON (RFC 9110 §12.5.1 quality values;
/// a missing `Accept` means JSON, which is what wallets want).
fn wants_html(headers: &HeaderMap) -> bool {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let quality = |wanted: &[&str]| -> f32 {
        accept
            .split(',')
            .filter_map(|range| {
                let mut parts = range.split(';');
                let media = parts.next()?.trim().to_ascii_lowercase();
                if !wanted.contains(&media.as_str()) {
                    return None;
                }
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q=")?.parse::<f32>().ok())
                    .next()
                    .unwrap_or(1.0);
                Some(q)
            })
            .fold(0.0, f32::max)
    };
    let html = quality(&["text/html", "application/xhtml+xml"]);
    let json = quality(&["application/json", "application/*", "*/*"]);
    html > 0.0 && html > json
}

/// The issuer's and the credentials' names, from the `display` entries of
/// the credential issuer metadata (the English one, else the first).
#[derive(Debug, Default)]
pub struct DisplayNames {
    /// The issuer's name.
    pub issuer: Option<String>,
    /// Credential configuration id → its name.
    pub credentials: std::collections::BTreeMap<String, String>,
}

/// The `name` of the preferred entry of a `display` array.
fn display_name(display: Option<&serde_json::Value>) -> Option<String> {
    let entries = display?.as_array()?;
    let english = entries.iter().find(|e| {
        e["locale"]
            .as_str()
            .is_some_and(|l| l == "en" || l.starts_with("en-"))
    });
    english
        .or(entries.first())
        .and_then(|e| e["name"].as_str())
        .map(str::to_owned)
}

impl DisplayNames {
    /// Reads the names once at start.
    pub fn from_config(config: &crate::config::CredentialIssuerConfig) -> Self {
        DisplayNames {
            issuer: display_name(config.display.as_ref()),
            credentials: config
                .credential_configurations_supported
                .iter()
                .filter_map(|(id, c)| Some((id.clone(), display_name(c.get("display"))?)))
                .collect(),
        }
    }
}

/// The offer page: who offers what, the QR code, the link, the expiry and
/// how to get the PIN.
fn page(offer: &OfferByReference, names: &DisplayNames) -> String {
    let issuer = names
        .issuer
        .as_deref()
        .map(|n| {
            format!(
                "<p class=\"issuer\">From <strong>{}</strong></p>\n",
                escape(n)
            )
        })
        .unwrap_or_default();
    let offered: String = offer
        .credentials
        .iter()
        .map(|id| {
            let name = names.credentials.get(id).unwrap_or(id);
            format!("<li>{}</li>", escape(name))
        })
        .collect();
    let qr = QrCode::with_error_correction_level(offer.deep_link.as_bytes(), EcLevel::M)
        .map(|code| {
            let svg = code
                .render::<svg::Color<'_>>()
                .min_dimensions(320, 320)
                .quiet_zone(true)
                .build();
            // Inline SVG needs no XML declaration.
            match svg.find("<svg") {
                Some(start) => svg[start..].to_owned(),
                None => svg,
            }
        })
        .unwrap_or_default();
    let pin = match &offer.tx_code {
        None => "No PIN is needed for this offer.".to_owned(),
        Some(spec) => {
            let kind = match spec.input_mode {
                InputMode::Numeric => "digit",
                InputMode::Text => "character",
            };
            let how = spec
                .description
                .as_deref()
                .map(escape)
                .unwrap_or_else(|| "It was sent to you separately.".to_owned());
            format!(
                "Your wallet will ask for a {}-{kind} PIN. {how} This page never shows it.",
                spec.length
            )
        }
    };
    let link = escape(&offer.deep_link);
    let expires = escape(&offer.expires_at);
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Credential offer</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; color: #111; background: #fff; }}
main {{ max-width: 36rem; margin: 0 auto; padding: 1.5rem; }}
.qr svg {{ display: block; width: 320px; height: 320px; margin: 1rem 0; }}
a {{ color: #0645ad; word-break: break-all; }}
dt {{ font-weight: 600; margin-top: 0.75rem; }}
dd {{ margin: 0.25rem 0 0 0; }}
</style>
</head>
<body>
<main>
<h1>Your credential offer</h1>
{issuer}<ul class="credentials">{offered}</ul>
<p>Scan this QR code with your wallet app to receive your credential.</p>
<div class="qr" role="img" aria-label="QR code of the credential offer link">{qr}</div>
<p>On the device that holds your wallet? <a href="{link}">Open the offer in your wallet</a>.</p>
<dl>
<dt>Offer link</dt><dd><code>{link}</code></dd>
<dt>Valid until</dt><dd><time datetime="{expires}">{expires}</time> (UTC)</dd>
<dt>PIN</dt><dd>{pin}</dd>
</dl>
</main>
</body>
</html>
"#
    )
}

/// Escapes text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn browsers_get_html_and_wallets_get_json() {
        let chromium =
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";
        assert!(wants_html(&accept(chromium)));
        assert!(!wants_html(&HeaderMap::new()));
        assert!(!wants_html(&accept("application/json")));
        assert!(!wants_html(&accept("*/*")));
        assert!(!wants_html(&accept("text/html;q=0.5, application/json")));
    }

    #[test]
    fn the_page_names_the_issuer_and_the_offered_credentials_escaped() {
        let config: crate::config::CredentialIssuerConfig = toml::from_str(
            r#"
display = [{ name = "Université <b>", locale = "fr" }, { name = "University <b>", locale = "en" }]
[credential_configurations_supported.Degree]
format = "dc+sd-jwt"
display = [{ name = "Degree & Honours" }]
[credential_configurations_supported.Other]
format = "jwt_vc_json"
"#,
        )
        .unwrap();
        let names = DisplayNames::from_config(&config);
        let offer = OfferByReference {
            offer_json: zeroize::Zeroizing::new(String::new()),
            deep_link: "openid-credential-offer://?x".into(),
            expires_at: "2026-12-04T00:00:00Z".into(),
            tx_code: None,
            credentials: vec!["Degree".into(), "Other".into()],
        };
        let html = page(&offer, &names);
        assert!(
            html.contains("<strong>University &lt;b&gt;</strong>"),
            "{html}"
        );
        assert!(html.contains("<li>Degree &amp; Honours</li>"));
        // A configuration without display is named by its id.
        assert!(html.contains("<li>Other</li>"));
    }

    #[test]
    fn descriptions_are_escaped() {
        assert_eq!(
            escape(r#"<b a="x">&'"#),
            "&lt;b a=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
