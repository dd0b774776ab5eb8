use super::*;

/// Feeds `stream` after asking `requests` (true: HEAD), `step` bytes at a
/// time, and returns what a close would mean after each byte (index i: after
/// i + 1 bytes).
fn closes(requests: &[bool], stream: &[u8], step: usize) -> Vec<AtClose> {
    let mut r = Responses::default();
    for &h in requests {
        r.asked(h);
    }
    let mut out = Vec::new();
    for piece in stream.chunks(step) {
        r.saw(piece);
        out.extend(std::iter::repeat_n(r.at_close(), piece.len()));
    }
    out
}

/// Every split of `stream` agrees with the whole: the close is `Idle`
/// exactly at the ends listed in `ends` (byte counts) and `last` at the end.
fn check(requests: &[bool], stream: &[u8], ends: &[usize], last: AtClose) {
    let whole = closes(requests, stream, stream.len());
    assert_eq!(
        *whole.last().unwrap(),
        last,
        "{}",
        String::from_utf8_lossy(stream)
    );
    for step in [1, 2, 3, 7, 64] {
        let seen = closes(requests, stream, step);
        let at_ends = seen
            .iter()
            .enumerate()
            .filter(|(i, c)| **c == AtClose::Idle && ((i + 1) % step == 0 || i + 1 == stream.len()))
            .map(|(i, _)| i + 1)
            .collect::<Vec<_>>();
        let expected: Vec<usize> = ends
            .iter()
            .copied()
            .filter(|e| e % step == 0 || *e == stream.len())
            .collect();
        assert_eq!(
            at_ends,
            expected,
            "step {step}: {}",
            String::from_utf8_lossy(stream)
        );
        assert_eq!(*seen.last().unwrap(), last, "step {step}");
    }
}

#[test]
fn a_content_length_response_ends_after_its_body() {
    let r = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
    check(&[false], r, &[r.len()], AtClose::Idle);
}

#[test]
fn pipelined_responses_each_end_where_they_end() {
    let a = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".as_slice();
    let b = b"HTTP/1.1 204 No Content\r\n\r\n".as_slice();
    let c = b"HTTP/1.1 404 Not Found\r\ncontent-length:  3 \r\n\r\nno!".as_slice();
    let all = [a, b, c].concat();
    // Idle only once every request is answered.
    check(&[false, false, false], &all, &[all.len()], AtClose::Idle);
}

#[test]
fn nothing_sent_for_an_unanswered_request_is_a_dropped_request() {
    let mut r = Responses::default();
    assert_eq!(r.at_close(), AtClose::Idle);
    r.asked(false);
    assert_eq!(r.at_close(), AtClose::Dropped { head: false });
    r.saw(b"HTTP/1.1 2");
    assert_eq!(r.at_close(), AtClose::Close, "part of the answer went out");
    r.saw(b"00 OK\r\ncontent-length: 0\r\n\r\n");
    assert_eq!(r.at_close(), AtClose::Idle);
    // The second of two pipelined requests dropped after the first's answer.
    let mut r = Responses::default();
    r.asked(false);
    r.asked(false);
    r.saw(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    assert_eq!(r.at_close(), AtClose::Dropped { head: false });
}

#[test]
fn an_answer_that_says_the_app_closes_closes_the_client_too() {
    // The client was told the connection ends: it does, even if the client
    // sends more (no new app connection behind its back).
    for r in [
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n".as_slice(),
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok".as_slice(),
    ] {
        check(&[false], r, &[], AtClose::Close);
    }
    // HTTP/1.0 that keeps the connection, and a 100 Continue saying close
    // (only a final answer speaks for the connection).
    let kept = b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok";
    check(&[false], kept, &[kept.len()], AtClose::Idle);
    let interim = b"HTTP/1.1 100 Continue\r\nconnection: close\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    check(&[false], interim, &[interim.len()], AtClose::Idle);
}

#[test]
fn busy_while_an_answer_is_owed_and_a_dropped_head_is_told_apart() {
    let mut r = Responses::default();
    assert!(!r.busy());
    r.asked(true);
    assert!(r.busy());
    assert_eq!(r.at_close(), AtClose::Dropped { head: true });
    assert_eq!(r.idle_since(), None);
    r.saw(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n");
    assert!(!r.busy());
    assert!(r.idle_since().is_some());
    assert_eq!(r.at_close(), AtClose::Idle);
    // Once the scanner has given up, it cannot say the app still owes.
    r.asked(false);
    assert!(r.busy());
    assert_eq!(r.idle_since(), None);
    r.saw(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
    assert!(!r.busy());
}

#[test]
fn heads_1xx_204_and_304_have_no_body() {
    // A HEAD answer carries the length of the body it does not send.
    let head = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n";
    check(&[true], head, &[head.len()], AtClose::Idle);
    let not_modified = b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n";
    check(&[false], not_modified, &[not_modified.len()], AtClose::Idle);
    // 100 Continue, then the final answer: one request, one answer.
    let cont = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n";
    check(&[false], cont, &[cont.len()], AtClose::Idle);
}

#[test]
fn chunked_bodies_end_after_the_last_chunk_and_the_trailers() {
    let r = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nx-trailer: t\r\n\r\n";
    check(&[false], r, &[r.len()], AtClose::Idle);
    let plain = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nz";
    check(&[false, false], plain, &[plain.len()], AtClose::Idle);
}

#[test]
fn a_body_until_close_closes_the_client_too() {
    for r in [
        b"HTTP/1.1 200 OK\r\n\r\nstreaming...".as_slice(),
        b"HTTP/1.0 200 OK\r\nserver: old\r\n\r\n".as_slice(),
        // chunked is not the last coding: the body ends with the connection.
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            .as_slice(),
    ] {
        check(&[false], r, &[], AtClose::Close);
    }
}

#[test]
fn what_cannot_be_followed_is_given_up_on_and_closes_with_the_app() {
    for (requests, r) in [
        // Bytes no request asked for.
        (
            &[][..],
            b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n".as_slice(),
        ),
        // Not HTTP, or framing that cannot be trusted.
        (&[false][..], b"SSH-2.0-OpenSSH\r\n\r\n".as_slice()),
        (
            &[false][..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab".as_slice(),
        ),
        (
            &[false][..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0x10\r\n\r\n".as_slice(),
        ),
        (
            &[false][..],
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".as_slice(),
        ),
        (
            &[false][..],
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n".as_slice(),
        ),
        // Another protocol from here on.
        (
            &[false][..],
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n\x81\x05hello"
                .as_slice(),
        ),
    ] {
        check(requests, r, &[], AtClose::Close);
    }
    // An answer, then bytes nobody asked for: idle in between, not after.
    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".as_slice();
    let extra = [answer, b"HTTP/1.1 200 OK\r\n\r\n"].concat();
    check(&[false], &extra, &[answer.len()], AtClose::Close);
    // A head over the limit.
    let big = [
        b"HTTP/1.1 200 OK\r\nx: ".as_slice(),
        &vec![b'a'; MAX_HEAD_BYTES + 10],
    ]
    .concat();
    assert_eq!(
        *closes(&[false], &big, 4096).last().unwrap(),
        AtClose::Close
    );
    assert_eq!(
        *closes(&[false], &big, big.len()).last().unwrap(),
        AtClose::Close
    );
}

#[test]
fn framing_fields_matter_only_where_a_body_can_follow() {
    // A bad or conflicting length on an answer without a body is ignored,
    // as it was: no body follows whatever it says.
    for (head, r) in [
        (
            true,
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n".as_slice(),
        ),
        (
            false,
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"
                .as_slice(),
        ),
        (
            false,
            b"HTTP/1.1 204 No Content\r\ncontent-length: -1\r\n\r\n".as_slice(),
        ),
    ] {
        check(&[head], r, &[r.len()], AtClose::Idle);
    }
    let cont = b"HTTP/1.1 100 Continue\r\ncontent-length: x\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    check(&[false], cont, &[cont.len()], AtClose::Idle);
    // Where a body follows, a bad length is not followed even next to a
    // transfer-encoding that would frame the body.
    let te = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: x\r\n\r\n0\r\n\r\n";
    check(&[false], te, &[], AtClose::Close);
    // The first problem in header order is the one reported.
    let parse = |r: &[u8]| parse_head(r, false);
    assert_eq!(
        parse(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"),
        Parsed::Invalid("a content-length that is not a number")
    );
    assert_eq!(
        parse(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\ncontent-length: x\r\n\r\n"),
        Parsed::Invalid("two different content-length values")
    );
    // Equal repeated lengths are one length; connection tokens from any
    // field count.
    let r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nConnection: keep-alive\r\ncontent-length: 2\r\nconnection: Close\r\n\r\nok";
    assert_eq!(
        parse(r),
        Parsed::Complete {
            len: r.len() - 2,
            body: Body::Length(2),
            close: true
        }
    );
}

#[test]
fn up_to_64_header_fields_are_followed() {
    let head = |fields: usize| {
        let mut r = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n".to_vec();
        for i in 1..fields {
            r.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        r.extend_from_slice(b"\r\n");
        r
    };
    let at_limit = head(MAX_HEADERS);
    check(&[false], &at_limit, &[at_limit.len()], AtClose::Idle);
    let over = head(MAX_HEADERS + 1);
    check(&[false], &over, &[], AtClose::Close);
}

#[test]
fn chunk_sizes() {
    assert_eq!(chunk_size(b"0\r\n"), Some(0));
    assert_eq!(chunk_size(b"1aF;name=value\r\n"), Some(0x1af));
    assert_eq!(chunk_size(b"\r\n"), None);
    assert_eq!(chunk_size(b"-1\r\n"), None);
    assert_eq!(chunk_size(b"1234567890abcdef0\r\n"), None, "over 60 bits");
}

/// One well-formed response with a random framing: (answers a HEAD
/// request, its bytes).
fn response() -> impl proptest::strategy::Strategy<Value = (bool, Vec<u8>)> {
    use proptest::prelude::*;
    let body = proptest::collection::vec(any::<u8>(), 0..300);
    let chunks = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..80), 0..5);
    prop_oneof![
        body.clone().prop_map(|b| {
            let mut r =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", b.len()).into_bytes();
            r.extend_from_slice(&b);
            (false, r)
        }),
        chunks.prop_map(|cs| {
            let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for c in cs {
                r.extend_from_slice(format!("{:X};x=y\r\n", c.len()).as_bytes());
                r.extend_from_slice(&c);
                r.extend_from_slice(b"\r\n");
            }
            r.extend_from_slice(b"0\r\ntrailer: x\r\n\r\n");
            (false, r)
        }),
        Just((
            true,
            b"HTTP/1.1 200 OK\r\ncontent-length: 77\r\n\r\n".to_vec()
        )),
        Just((
            false,
            b"HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n".to_vec()
        )),
        body.prop_map(|b| {
            let mut r = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n".to_vec();
            r.extend_from_slice(format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes());
            r.extend_from_slice(&b);
            (false, r)
        }),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]
    /// Pipelined answers in pieces of any size: after each answer's last
    /// byte one request fewer is unanswered, and the app is idle exactly
    /// when every request is answered.
    #[test]
    fn answers_end_where_they_end_in_pieces_of_any_size(
        answers in proptest::collection::vec(response(), 1..5),
        step in 1usize..50,
    ) {
        let mut r = Responses::default();
        for (head, _) in &answers {
            r.asked(*head);
        }
        for (k, (_, bytes)) in answers.iter().enumerate() {
            for piece in bytes.chunks(step) {
                proptest::prop_assert_eq!(r.unanswered(), answers.len() - k);
                r.saw(piece);
            }
            proptest::prop_assert_eq!(r.unanswered(), answers.len() - k - 1);
            let expected = match answers.get(k + 1) { None => AtClose::Idle, Some((head, _)) => AtClose::Dropped { head: *head } };
            proptest::prop_assert_eq!(r.at_close(), expected);
        }
    }

    /// Any bytes at all, whole or in pieces: no panic, and the same verdict.
    #[test]
    fn garbage_whole_or_in_pieces_gets_the_same_verdict(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        asked in 0usize..3,
        step in 1usize..30,
    ) {
        let (mut whole, mut pieces) = (Responses::default(), Responses::default());
        for _ in 0..asked {
            whole.asked(false);
            pieces.asked(false);
        }
        whole.saw(&bytes);
        for p in bytes.chunks(step) {
            pieces.saw(p);
        }
        proptest::prop_assert_eq!(whole.at_close(), pieces.at_close());
        proptest::prop_assert_eq!(whole.unanswered(), pieces.unanswered());
    }
}
