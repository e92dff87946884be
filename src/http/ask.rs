//! Asking an account's actor: send a message, wait for its reply, render the outcome.
//! Every handler that reads or changes an account goes through here.

use std::time::Duration;

use hyper::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;

use super::dto;
use super::error::ApiError;
use super::App;
use crate::actor::{ActorError, Msg, Mutation, Outcome, Reply};
use crate::domain::{Account, Command};

/// What a JSON handler answers: a status and a body, or an error.
pub type Answer = Result<(StatusCode, Value), ApiError>;

/// Sends a message to an account's actor and waits for its answer.
pub async fn ask(
    app: &App,
    id: &str,
    make: impl FnOnce(oneshot::Sender<Reply>) -> Msg,
) -> Result<Outcome, ApiError> {
    let (tx, rx) = oneshot::channel();
    if let Err((e, _)) = app.registry.send(id, make(tx)) {
        return Err(e.into());
    }
    Ok(rx.await.unwrap_or(Err(ActorError::Unavailable))?)
}

/// The account as its actor holds it: it has applied every mutation answered so far.
pub async fn view(app: &App, id: &str) -> Result<std::sync::Arc<Account>, ApiError> {
    let Outcome::View(acct) = ask(app, id, |reply| Msg::Get { reply }).await? else {
        unreachable!("Get answers a view")
    };
    Ok(acct)
}

/// Renders an actor's outcome: `status` for an applied mutation, 200 for a dry run or a
/// view.
pub fn answer(app: &App, id: &str, outcome: Outcome, status: StatusCode) -> Answer {
    let pricing = &app.registry.services().pricing;
    match outcome {
        Outcome::Applied { event, duplicate } => Ok((
            status,
            dto::event_answer(id, &event, duplicate, false, pricing),
        )),
        Outcome::DryRun { event } => Ok((
            StatusCode::OK,
            dto::event_answer(id, &event, false, true, pricing),
        )),
        Outcome::View(acct) => Ok((StatusCode::OK, dto::account_view(&acct, pricing))),
    }
}

/// Sends `cmd` to the account's actor and renders what it did.
pub async fn mutate(
    app: &App,
    id: &str,
    cmd: Command,
    dry_run: bool,
    wait: Duration,
    status: StatusCode,
) -> Answer {
    let outcome = ask(app, id, |reply| {
        Msg::Mutate(Box::new(Mutation {
            cmd,
            dry_run,
            wait,
            reply,
        }))
    })
    .await?;
    answer(app, id, outcome, status)
}
