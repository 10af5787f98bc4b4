//! Development-only verifier: trusts the goim JSON body exactly as goim did.
//!
//! Anyone can claim any user id with it, so it must be switched on explicitly (`edge_auth = "insecure"`)
//! and it logs a warning when created.

use async_trait::async_trait;

use super::body::GoimAuthBody;
use super::{AuthError, AuthRequest, Identity, Verifier};

/// Accepts whatever identity the client claims. Never use in production.
#[derive(Debug)]
pub struct InsecureVerifier(());

impl InsecureVerifier {
    /// Creates the verifier and warns loudly that auth is off.
    pub fn new() -> Self {
        tracing::warn!(
            "INSECURE auth mode: clients are trusted to say who they are (goim behaviour); development only"
        );
        Self(())
    }
}

impl Default for InsecureVerifier {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Verifier for InsecureVerifier {
    async fn verify(&self, request: AuthRequest<'_>) -> Result<Identity, AuthError> {
        GoimAuthBody::parse(request.body)
            .map(GoimAuthBody::claimed_identity)
            .map_err(|e| AuthError::Malformed(e.to_string()))
    }
}
