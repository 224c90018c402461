//! [`ResponseFuture`]: classifies the response and settles the permit.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::BoxError;

use super::breaker::Permit;
use super::classify::Classify;

pin_project! {
    /// The response future of a
    /// [`CircuitBreakerService`](super::CircuitBreakerService): records the
    /// outcome when the call finishes; dropped before that, it frees its
    /// permit without counting.
    pub struct ResponseFuture<F, C> {
        #[pin]
        state: State<F>,
        classify: C,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called {
            #[pin]
            future: F,
            permit: Option<Permit>,
        },
        Rejected {
            error: Option<BoxError>,
        },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(future: F, permit: Permit, classify: C) -> Self {
        Self {
            state: State::Called {
                future,
                permit: Some(permit),
            },
            classify,
        }
    }

    pub(crate) fn rejected(error: BoxError, classify: C) -> Self {
        Self {
            state: State::Rejected { error: Some(error) },
            classify,
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.state.project() {
            StateProj::Called { future, permit } => {
                let result = ready!(future.poll(cx));
                if let Some(permit) = permit.take() {
                    permit.classify(this.classify, &result);
                }
                Poll::Ready(result.map_err(Into::into))
            }
            StateProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "circuit breaker future polled after completion".into()))),
        }
    }
}
