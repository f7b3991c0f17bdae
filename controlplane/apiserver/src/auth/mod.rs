//! Who is asking and may they: authentication (client certificates, bearer tokens, ServiceAccount
//! tokens), impersonation, authorization (masters, the Node authorizer, RBAC) and the request
//! attributes every decision is made on.

pub mod attributes;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod filter;
pub mod impersonate;
pub mod reviews;
pub mod user;

pub use attributes::Attributes;
pub use user::UserInfo;

tokio::task_local! {
    /// The authenticated (and, when impersonating, impersonated) user of the request being served.
    static CURRENT_USER: UserInfo;
}

/// Runs `fut` with `user` as the current request's user (see [`current_user`]).
pub async fn with_user<F: std::future::Future>(user: UserInfo, fut: F) -> F::Output {
    CURRENT_USER.scope(user, fut).await
}

/// The user of the request being served; `None` outside a request (internal callers, tests).
pub fn current_user() -> Option<UserInfo> {
    CURRENT_USER.try_with(Clone::clone).ok()
}
