//! Users and sessions: users created, read, listed by uid in byte order,
//! updated; uids and emails unique per app (emails whatever their case),
//! under concurrency too; sessions rotated once, never after they expired,
//! ended one by one, by revocation, with their user or app, or when
//! trimmed; all of it kept across a reopen.

use super::Fixture;
use crate::Store;
use crate::users::{SessionRecord, UserRecord, UserTaken};

/// A password user of `app` (or an anonymous one, without `email`).
pub(crate) fn user(app: &str, uid: &str, email: Option<&str>) -> UserRecord {
    UserRecord {
        app: app.into(),
        uid: uid.into(),
        provider: if email.is_some() {
            "password"
        } else {
            "anonymous"
        }
        .into(),
        email: email.map(str::to_owned),
        password_hash: email.map(|_| "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned()),
        claims: None,
        created_ms: 10,
        last_sign_in_ms: 10,
        disabled: false,
        tokens_valid_after_ms: 0,
    }
}

/// A session of `app`'s user `uid` whose refresh token hashes to `hash`.
pub(crate) fn session(
    app: &str,
    id: &str,
    uid: &str,
    hash: &str,
    expires_ms: i64,
) -> SessionRecord {
    SessionRecord {
        app: app.into(),
        id: id.into(),
        uid: uid.into(),
        refresh_sha256: hash.into(),
        created_ms: 100,
        expires_ms,
    }
}

async fn create(store: &dyn Store, user: UserRecord) {
    store.create_user(user).await.unwrap().unwrap();
}

fn uids(users: &[UserRecord]) -> Vec<&str> {
    users.iter().map(|u| u.uid.as_str()).collect()
}

/// Users come back as they were made (emails in lower case), by uid or
/// email, listed page by page in the byte order of their uids and only
/// their app's; an update replaces all but the uid and the creation.
pub async fn users_are_created_read_listed_and_updated(f: &dyn Fixture) {
    let store = f.open().await;
    let mut ann = user("a", "u2", Some("Ann@Example.COM"));
    ann.claims = Some(r#"{"role":"admin"}"#.into());
    ann.disabled = true;
    ann.tokens_valid_after_ms = 7;
    ann.created_ms = 11;
    ann.last_sign_in_ms = 12;
    create(&*store, ann.clone()).await;
    for uid in ["u10", "Zed", "u1", "\u{e9}t\u{e9}", "u3"] {
        create(&*store, user("a", uid, None)).await;
    }
    create(&*store, user("b", "u0", Some("ann@example.com"))).await;

    let kept = store.get_user("a", "u2").await.unwrap().unwrap();
    assert_eq!(kept.email.as_deref(), Some("ann@example.com"));
    ann.email = kept.email.clone();
    assert_eq!(kept, ann);
    assert_eq!(store.get_user("a", "nobody").await.unwrap(), None);
    assert_eq!(store.get_user("b", "u2").await.unwrap(), None);
    assert_eq!(
        store
            .user_by_email("a", "ANN@example.com")
            .await
            .unwrap()
            .as_ref(),
        Some(&ann)
    );
    assert_eq!(
        store
            .user_by_email("b", "ann@EXAMPLE.com")
            .await
            .unwrap()
            .map(|u| u.uid),
        Some("u0".to_owned())
    );
    assert_eq!(
        store.user_by_email("c", "ann@example.com").await.unwrap(),
        None
    );
    assert_eq!(
        store.user_by_email("a", "bob@example.com").await.unwrap(),
        None
    );

    // By uid, as bytes order: upper case, then lower case, then the rest.
    let all = ["Zed", "u1", "u10", "u2", "u3", "\u{e9}t\u{e9}"];
    assert_eq!(uids(&store.list_users("a", None, 100).await.unwrap()), all);
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_users("a", after.as_deref(), 4).await.unwrap();
        assert!(page.len() <= 4);
        paged.extend(page.iter().map(|u| u.uid.clone()));
        if page.len() < 4 {
            break;
        }
        after = page.last().map(|u| u.uid.clone());
    }
    assert_eq!(paged, all);
    assert_eq!(
        uids(&store.list_users("a", Some("u10"), 2).await.unwrap()),
        ["u2", "u3"]
    );
    assert_eq!(
        uids(
            &store
                .list_users("a", Some("\u{e9}t\u{e9}"), 2)
                .await
                .unwrap()
        ),
        Vec::<&str>::new()
    );
    assert_eq!(
        uids(&store.list_users("a", Some("A"), 1).await.unwrap()),
        ["Zed"]
    );
    assert_eq!(
        uids(&store.list_users("b", None, 10).await.unwrap()),
        ["u0"]
    );
    assert!(store.list_users("c", None, 10).await.unwrap().is_empty());

    // An update replaces everything but the uid and the creation.
    let changed = UserRecord {
        app: "a".into(),
        uid: "u2".into(),
        provider: "custom".into(),
        email: Some("Ann.New@Example.com".into()),
        password_hash: None,
        claims: Some(r#"{"role":"user"}"#.into()),
        created_ms: 999,
        last_sign_in_ms: 50,
        disabled: false,
        tokens_valid_after_ms: 40,
    };
    assert_eq!(store.update_user(changed.clone()).await.unwrap(), Ok(true));
    let kept = store.get_user("a", "u2").await.unwrap().unwrap();
    assert_eq!(
        kept,
        UserRecord {
            email: Some("ann.new@example.com".into()),
            created_ms: 11,
            ..changed.clone()
        }
    );
    assert_eq!(
        store.user_by_email("a", "ann@example.com").await.unwrap(),
        None
    );
    assert_eq!(
        store
            .user_by_email("a", "ann.new@example.COM")
            .await
            .unwrap()
            .map(|u| u.uid),
        Some("u2".to_owned())
    );
    // The old email is free again.
    create(&*store, user("a", "u4", Some("ann@example.com"))).await;
    // An email can go.
    assert_eq!(
        store
            .update_user(UserRecord {
                email: None,
                ..changed.clone()
            })
            .await
            .unwrap(),
        Ok(true)
    );
    assert_eq!(
        store
            .user_by_email("a", "ann.new@example.com")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.get_user("a", "u2").await.unwrap().unwrap().email,
        None
    );
    // No such user: nothing is made, whatever its email.
    let ghost = UserRecord {
        uid: "ghost".into(),
        email: Some("ghost@example.com".into()),
        ..changed
    };
    assert_eq!(store.update_user(ghost.clone()).await.unwrap(), Ok(false));
    let taken = UserRecord {
        email: Some("Ann@example.com".into()),
        ..ghost
    };
    assert_eq!(store.update_user(taken).await.unwrap(), Ok(false));
    assert_eq!(store.get_user("a", "ghost").await.unwrap(), None);
    assert_eq!(
        store.user_by_email("a", "ghost@example.com").await.unwrap(),
        None
    );
}

/// A uid or an email is taken once per app (an email whatever its case);
/// other apps, and users without an email, are free of it. A refused
/// create changes nothing.
pub async fn uids_and_emails_are_unique_per_app(f: &dyn Fixture) {
    let store = f.open().await;
    let first = user("a", "u1", Some("a@x.com"));
    create(&*store, first.clone()).await;
    assert_eq!(
        store
            .create_user(user("a", "u1", Some("other@x.com")))
            .await
            .unwrap(),
        Err(UserTaken::Uid)
    );
    assert_eq!(
        store.create_user(user("a", "u1", None)).await.unwrap(),
        Err(UserTaken::Uid)
    );
    // Both taken: the uid is what is said.
    assert_eq!(
        store
            .create_user(user("a", "u1", Some("a@x.com")))
            .await
            .unwrap(),
        Err(UserTaken::Uid)
    );
    assert_eq!(
        store
            .create_user(user("a", "u2", Some("A@X.com")))
            .await
            .unwrap(),
        Err(UserTaken::Email)
    );
    assert_eq!(store.get_user("a", "u2").await.unwrap(), None);
    assert_eq!(store.user_by_email("a", "other@x.com").await.unwrap(), None);
    assert_eq!(store.get_user("a", "u1").await.unwrap(), Some(first));
    // Another app has its own.
    create(&*store, user("b", "u1", Some("a@x.com"))).await;
    create(&*store, user("b", "u2", Some("b@x.com"))).await;
    // Without an email, any number.
    create(&*store, user("a", "u3", None)).await;
    create(&*store, user("a", "u4", None)).await;
    create(&*store, user("a", "u5", Some("b@x.com"))).await;
    assert_eq!(
        uids(&store.list_users("a", None, 10).await.unwrap()),
        ["u1", "u3", "u4", "u5"]
    );
    assert_eq!(store.list_users("b", None, 10).await.unwrap().len(), 2);
}

/// Ten sign-ups with one email at once: one is made, nine are told the
/// email is taken; ten creates of one uid likewise.
pub async fn racing_creates_of_one_email_have_one_winner(f: &dyn Fixture) {
    let store = f.open().await;
    let racers: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            let email = if i % 2 == 0 {
                "Racer@Example.com"
            } else {
                "racer@example.COM"
            };
            tokio::spawn(async move {
                store
                    .create_user(user("a", &format!("u{i}"), Some(email)))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, racer) in racers.into_iter().enumerate() {
        match racer.await.unwrap() {
            Ok(()) => winners.push(format!("u{i}")),
            Err(taken) => assert_eq!(taken, UserTaken::Email),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let held = store
        .user_by_email("a", "racer@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.uid, winners[0]);
    assert_eq!(
        uids(&store.list_users("a", None, 100).await.unwrap()),
        [winners[0].as_str()]
    );

    let racers: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_user(user("a", "the-one", Some(&format!("r{i}@example.com"))))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, racer) in racers.into_iter().enumerate() {
        match racer.await.unwrap() {
            Ok(()) => winners.push(format!("r{i}@example.com")),
            Err(taken) => assert_eq!(taken, UserTaken::Uid),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(
        store.get_user("a", "the-one").await.unwrap().unwrap().email,
        Some(winners[0].clone())
    );
    assert_eq!(store.list_users("a", None, 100).await.unwrap().len(), 2);
}

/// An update refuses an email another user of the app has, changing
/// nothing; a user's own email (in another case) is no conflict, and an
/// email given up is free.
pub async fn an_update_cannot_take_another_user_s_email(f: &dyn Fixture) {
    let store = f.open().await;
    create(&*store, user("a", "u1", Some("one@x.com"))).await;
    create(&*store, user("a", "u2", Some("two@x.com"))).await;
    create(&*store, user("b", "u3", Some("three@x.com"))).await;
    let before = store.get_user("a", "u2").await.unwrap().unwrap();
    let stealing = UserRecord {
        email: Some("ONE@x.com".into()),
        last_sign_in_ms: 99,
        disabled: true,
        ..before.clone()
    };
    assert_eq!(
        store.update_user(stealing).await.unwrap(),
        Err(UserTaken::Email)
    );
    assert_eq!(
        store.get_user("a", "u2").await.unwrap(),
        Some(before.clone())
    );
    assert_eq!(
        store
            .user_by_email("a", "one@x.com")
            .await
            .unwrap()
            .map(|u| u.uid),
        Some("u1".to_owned())
    );
    // Another app's email is no conflict.
    assert_eq!(
        store
            .update_user(UserRecord {
                email: Some("three@x.com".into()),
                ..before.clone()
            })
            .await
            .unwrap(),
        Ok(true)
    );
    // Its own, in another case, neither.
    let mut one = store.get_user("a", "u1").await.unwrap().unwrap();
    one.email = Some("One@X.com".into());
    one.last_sign_in_ms = 20;
    assert_eq!(store.update_user(one).await.unwrap(), Ok(true));
    let one = store.get_user("a", "u1").await.unwrap().unwrap();
    assert_eq!(
        (one.email.as_deref(), one.last_sign_in_ms),
        (Some("one@x.com"), 20)
    );
    // What u2 gave up (two@x.com) is free for u1.
    assert_eq!(
        store
            .update_user(UserRecord {
                email: Some("two@x.com".into()),
                ..one
            })
            .await
            .unwrap(),
        Ok(true)
    );
    assert_eq!(
        store
            .user_by_email("a", "two@x.com")
            .await
            .unwrap()
            .map(|u| u.uid),
        Some("u1".to_owned())
    );
    assert_eq!(store.user_by_email("a", "one@x.com").await.unwrap(), None);
}

/// A refresh token rotates once: its hash is replaced and its expiry
/// moved; the old one finds nothing after, nor does an expired session,
/// a wrong hash or another app. Of racing rotations with one token, one
/// wins. Sessions are got and ended by app and id.
pub async fn a_session_rotates_once_and_not_after_it_expired(f: &dyn Fixture) {
    let store = f.open().await;
    create(&*store, user("a", "u1", None)).await;
    let s1 = session("a", "s1", "u1", "h0", 1000);
    store.create_session(s1.clone()).await.unwrap();
    // The same id in another app is another session.
    let other = session("b", "s1", "u9", "h0", 1000);
    store.create_session(other.clone()).await.unwrap();
    assert_eq!(
        store.get_session("a", "s1").await.unwrap(),
        Some(s1.clone())
    );
    assert_eq!(store.get_session("a", "nope").await.unwrap(), None);

    let rotated = store
        .rotate_session("a", "s1", "h0", "h1", 500, 2000)
        .await
        .unwrap();
    let expected = SessionRecord {
        refresh_sha256: "h1".into(),
        expires_ms: 2000,
        ..s1.clone()
    };
    assert_eq!(rotated, Some(expected.clone()));
    assert_eq!(
        store.get_session("a", "s1").await.unwrap(),
        Some(expected.clone())
    );
    // The old token, again: nothing, and nothing changes.
    assert_eq!(
        store
            .rotate_session("a", "s1", "h0", "h2", 600, 3000)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .rotate_session("a", "s1", "wrong", "h2", 600, 3000)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .rotate_session("c", "s1", "h1", "h2", 600, 3000)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.get_session("a", "s1").await.unwrap(), Some(expected));
    assert_eq!(store.get_session("b", "s1").await.unwrap(), Some(other));
    // Expired at its expiry: the current token no longer rotates.
    assert_eq!(
        store
            .rotate_session("a", "s1", "h1", "h2", 2000, 4000)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .rotate_session("a", "s1", "h1", "h2", 2500, 4000)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .rotate_session("a", "s1", "h1", "h2", 1999, 4000)
            .await
            .unwrap()
            .map(|s| (s.refresh_sha256, s.expires_ms)),
        Some(("h2".to_owned(), 4000))
    );
    // An expired session stays until trimmed, but never rotates.
    store
        .create_session(session("a", "s2", "u1", "old", 300))
        .await
        .unwrap();
    assert_eq!(
        store
            .rotate_session("a", "s2", "old", "new", 1500, 5000)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .get_session("a", "s2")
            .await
            .unwrap()
            .unwrap()
            .refresh_sha256,
        "old"
    );

    // Ten refreshes with one token at once: one wins.
    store
        .create_session(session("a", "s3", "u1", "t0", 10_000))
        .await
        .unwrap();
    let racers: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .rotate_session("a", "s3", "t0", &format!("t{}", i + 1), 100, 20_000)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = Vec::new();
    for racer in racers {
        if let Some(won) = racer.await.unwrap() {
            winners.push(won.refresh_sha256);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(
        store
            .get_session("a", "s3")
            .await
            .unwrap()
            .unwrap()
            .refresh_sha256,
        winners[0]
    );

    assert!(store.delete_session("a", "s1").await.unwrap());
    assert!(!store.delete_session("a", "s1").await.unwrap());
    assert_eq!(store.get_session("a", "s1").await.unwrap(), None);
    assert!(store.get_session("b", "s1").await.unwrap().is_some());
    assert!(!store.delete_session("c", "s2").await.unwrap());
    assert!(store.get_session("a", "s2").await.unwrap().is_some());
}

/// Revoking ends every session of the one user (not its app's other
/// users', nor another app's user of the same uid), and sets when its
/// access tokens start to count; a user that does not exist is `None`.
pub async fn revoking_ends_every_session_of_one_user(f: &dyn Fixture) {
    let store = f.open().await;
    for (app, uid) in [("a", "u1"), ("a", "u2"), ("b", "u1")] {
        create(&*store, user(app, uid, None)).await;
    }
    for (app, id, uid) in [
        ("a", "s1", "u1"),
        ("a", "s2", "u1"),
        ("a", "s3", "u2"),
        ("b", "s4", "u1"),
    ] {
        store
            .create_session(session(app, id, uid, &format!("h-{id}"), 10_000))
            .await
            .unwrap();
    }
    assert_eq!(
        store.revoke_sessions("a", "u1", 5000).await.unwrap(),
        Some(2)
    );
    assert_eq!(store.get_session("a", "s1").await.unwrap(), None);
    assert_eq!(store.get_session("a", "s2").await.unwrap(), None);
    assert!(store.get_session("a", "s3").await.unwrap().is_some());
    assert!(store.get_session("b", "s4").await.unwrap().is_some());
    assert_eq!(
        store
            .rotate_session("a", "s1", "h-s1", "x", 100, 20_000)
            .await
            .unwrap(),
        None
    );
    let revoked = store.get_user("a", "u1").await.unwrap().unwrap();
    assert_eq!(revoked.tokens_valid_after_ms, 5000);
    assert_eq!(
        UserRecord {
            tokens_valid_after_ms: 0,
            ..revoked
        },
        user("a", "u1", None),
        "nothing else changes"
    );
    for (app, uid) in [("a", "u2"), ("b", "u1")] {
        assert_eq!(
            store
                .get_user(app, uid)
                .await
                .unwrap()
                .unwrap()
                .tokens_valid_after_ms,
            0
        );
    }
    // Again: no sessions left, a later moment.
    assert_eq!(
        store.revoke_sessions("a", "u1", 6000).await.unwrap(),
        Some(0)
    );
    assert_eq!(
        store
            .get_user("a", "u1")
            .await
            .unwrap()
            .unwrap()
            .tokens_valid_after_ms,
        6000
    );
    // No such user: nothing happens.
    store
        .create_session(session("a", "s5", "ghost", "h", 10_000))
        .await
        .unwrap();
    assert_eq!(
        store.revoke_sessions("a", "ghost", 7000).await.unwrap(),
        None
    );
    assert_eq!(store.revoke_sessions("c", "u1", 7000).await.unwrap(), None);
    assert_eq!(store.get_user("a", "ghost").await.unwrap(), None);
    assert!(store.get_session("a", "s5").await.unwrap().is_some());
}

/// Deleting a user ends its sessions and frees its uid and email.
pub async fn deleting_a_user_ends_its_sessions(f: &dyn Fixture) {
    let store = f.open().await;
    create(&*store, user("a", "u1", Some("one@x.com"))).await;
    create(&*store, user("a", "u2", Some("two@x.com"))).await;
    create(&*store, user("b", "u1", Some("one@x.com"))).await;
    for (app, id, uid) in [
        ("a", "s1", "u1"),
        ("a", "s2", "u1"),
        ("a", "s3", "u2"),
        ("b", "s4", "u1"),
    ] {
        store
            .create_session(session(app, id, uid, "h", 10_000))
            .await
            .unwrap();
    }
    assert!(store.delete_user("a", "u1").await.unwrap());
    assert!(!store.delete_user("a", "u1").await.unwrap());
    assert!(!store.delete_user("c", "u2").await.unwrap());
    assert_eq!(store.get_user("a", "u1").await.unwrap(), None);
    assert_eq!(store.user_by_email("a", "one@x.com").await.unwrap(), None);
    assert_eq!(store.get_session("a", "s1").await.unwrap(), None);
    assert_eq!(store.get_session("a", "s2").await.unwrap(), None);
    assert!(store.get_session("a", "s3").await.unwrap().is_some());
    assert!(store.get_session("b", "s4").await.unwrap().is_some());
    assert!(store.get_user("b", "u1").await.unwrap().is_some());
    assert_eq!(
        uids(&store.list_users("a", None, 10).await.unwrap()),
        ["u2"]
    );
    // Its uid and email are free again.
    create(&*store, user("a", "u1", Some("ONE@x.com"))).await;
    create(&*store, user("a", "u3", None)).await;
    assert!(store.delete_user("a", "u3").await.unwrap());
}

/// Trimming forgets the sessions that expired before the moment given,
/// of every app; a rotation that moved an expiry keeps its session.
pub async fn expired_sessions_are_trimmed(f: &dyn Fixture) {
    let store = f.open().await;
    for (app, id, expires) in [
        ("a", "s1", 100),
        ("a", "s2", 200),
        ("b", "s3", 150),
        ("b", "s4", 300),
        ("a", "s5", 250),
    ] {
        store
            .create_session(session(app, id, "u1", id, expires))
            .await
            .unwrap();
    }
    assert!(
        store
            .rotate_session("a", "s5", "s5", "s5b", 50, 1000)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.trim_sessions(100).await.unwrap(), 0);
    assert_eq!(store.trim_sessions(200).await.unwrap(), 2);
    assert_eq!(store.get_session("a", "s1").await.unwrap(), None);
    assert_eq!(store.get_session("b", "s3").await.unwrap(), None);
    assert!(store.get_session("a", "s2").await.unwrap().is_some());
    assert_eq!(store.trim_sessions(301).await.unwrap(), 2);
    assert_eq!(store.trim_sessions(301).await.unwrap(), 0);
    assert_eq!(store.get_session("b", "s4").await.unwrap(), None);
    assert_eq!(
        store
            .get_session("a", "s5")
            .await
            .unwrap()
            .map(|s| s.expires_ms),
        Some(1000)
    );
}

/// Deleting an app takes its users and their sessions; other apps keep
/// theirs, and the same names start afresh.
pub async fn deleting_an_app_removes_its_users_and_sessions(f: &dyn Fixture) {
    let store = f.open().await;
    store
        .activate(super::apps::version("a", 128))
        .await
        .unwrap();
    for app in ["a", "b"] {
        create(&*store, user(app, "u1", Some("one@x.com"))).await;
        create(&*store, user(app, "u2", None)).await;
        store
            .create_session(session(app, "s1", "u1", "h", 10_000))
            .await
            .unwrap();
        store
            .create_session(session(app, "s2", "u2", "h", 10_000))
            .await
            .unwrap();
    }
    assert!(store.delete_app("a").await.unwrap());
    assert!(store.list_users("a", None, 10).await.unwrap().is_empty());
    assert_eq!(store.user_by_email("a", "one@x.com").await.unwrap(), None);
    assert_eq!(store.get_session("a", "s1").await.unwrap(), None);
    assert_eq!(store.get_session("a", "s2").await.unwrap(), None);
    assert_eq!(store.list_users("b", None, 10).await.unwrap().len(), 2);
    assert!(store.get_session("b", "s1").await.unwrap().is_some());
    assert!(store.get_session("b", "s2").await.unwrap().is_some());
    // An app without a record is no app, but its users go too.
    assert!(!store.delete_app("b").await.unwrap());
    assert!(store.list_users("b", None, 10).await.unwrap().is_empty());
    assert_eq!(store.get_session("b", "s1").await.unwrap(), None);
    // The same names again start afresh.
    create(&*store, user("a", "u1", Some("one@x.com"))).await;
    store
        .create_session(session("a", "s1", "u1", "new", 10_000))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_session("a", "s1")
            .await
            .unwrap()
            .unwrap()
            .refresh_sha256,
        "new"
    );
}

/// Users and sessions, and what keeps them unique, survive a reopen.
pub async fn users_and_sessions_survive_a_reopen(f: &dyn Fixture) {
    let store = f.open().await;
    let mut ann = user("a", "u1", Some("ann@x.com"));
    ann.claims = Some("{}".into());
    ann.disabled = true;
    create(&*store, ann.clone()).await;
    create(&*store, user("a", "u2", None)).await;
    let s1 = session("a", "s1", "u1", "h0", 1000);
    store.create_session(s1.clone()).await.unwrap();
    store.revoke_sessions("a", "u2", 77).await.unwrap();
    let before = store.list_users("a", None, 10).await.unwrap();
    drop(store);

    let store = f.open().await;
    assert_eq!(store.list_users("a", None, 10).await.unwrap(), before);
    assert_eq!(store.get_user("a", "u1").await.unwrap(), Some(ann));
    assert_eq!(
        store
            .get_user("a", "u2")
            .await
            .unwrap()
            .unwrap()
            .tokens_valid_after_ms,
        77
    );
    assert_eq!(store.get_session("a", "s1").await.unwrap(), Some(s1));
    assert_eq!(
        store
            .create_user(user("a", "u3", Some("ANN@x.com")))
            .await
            .unwrap(),
        Err(UserTaken::Email)
    );
    assert_eq!(
        store.create_user(user("a", "u2", None)).await.unwrap(),
        Err(UserTaken::Uid)
    );
    assert!(
        store
            .rotate_session("a", "s1", "h0", "h1", 500, 2000)
            .await
            .unwrap()
            .is_some()
    );
}

/// The users and sessions a store moving elsewhere takes, for the
/// transfer case.
pub(crate) async fn fill_for_transfer(store: &dyn Store) -> (Vec<UserRecord>, Vec<SessionRecord>) {
    let mut ann = user("a", "u1", Some("ann@x.com"));
    ann.claims = Some(r#"{"plan":"pro"}"#.into());
    ann.tokens_valid_after_ms = 42;
    let bob = user("a", "u2", None);
    for u in [&ann, &bob] {
        create(store, u.clone()).await;
    }
    let sessions = vec![
        session("a", "s1", "u1", "h1", 10_000),
        session("a", "s2", "u1", "h2", 20_000),
        session("a", "s3", "u2", "h3", 30_000),
    ];
    for s in &sessions {
        store.create_session(s.clone()).await.unwrap();
    }
    (vec![ann, bob], sessions)
}

/// After the move: the users and sessions are there, unique as before,
/// and rotate.
pub(crate) async fn check_transferred(
    store: &dyn Store,
    users: &[UserRecord],
    sessions: &[SessionRecord],
) {
    assert_eq!(store.list_users("a", None, 10).await.unwrap(), users);
    for s in sessions {
        assert_eq!(
            store.get_session("a", &s.id).await.unwrap().as_ref(),
            Some(s)
        );
    }
    assert_eq!(
        store
            .user_by_email("a", "Ann@X.com")
            .await
            .unwrap()
            .map(|u| u.uid),
        Some("u1".to_owned())
    );
    assert_eq!(
        store
            .create_user(user("a", "u9", Some("ann@x.com")))
            .await
            .unwrap(),
        Err(UserTaken::Email)
    );
    assert!(
        store
            .rotate_session("a", "s1", "h1", "h1b", 5000, 15_000)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store.revoke_sessions("a", "u1", 9000).await.unwrap(),
        Some(2)
    );
}
