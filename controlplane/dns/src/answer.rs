//! One query against the index: the response message, or "forward it" for names outside the
//! cluster domain (and reverse names the cluster does not own).

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::index::{absolute, Index, Rec};

/// What to do with a query.
#[derive(Debug)]
pub enum Outcome {
    /// Send this.
    Answer(Message),
    /// Ask the upstream resolvers.
    Forward,
}

/// A response to `req` with `code`, echoing its id, question and EDNS.
pub fn reply(req: &Message, code: ResponseCode) -> Message {
    let mut m = Message::new();
    m.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(req.op_code())
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(code);
    for q in req.queries() {
        m.add_query(q.clone());
    }
    if req.extensions().is_some() {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m
}

fn name(s: &str) -> Option<Name> {
    Name::from_ascii(s).ok()
}

fn soa(idx: &Index, ttl: u32) -> Option<Record> {
    let zone = name(&idx.domain)?;
    let rdata = SOA::new(
        name(&format!("ns.dns.{}", idx.domain))?,
        name(&format!("hostmaster.{}", idx.domain))?,
        1,
        7200,
        1800,
        86400,
        ttl,
    );
    Some(Record::from_rdata(zone, ttl, RData::SOA(rdata)))
}

fn to_rdata(rec: &Rec) -> Option<RData> {
    Some(match rec {
        Rec::A(ip) => RData::A(A(*ip)),
        Rec::Srv { port, target } => {
            // Weight as CoreDNS gives equal records: 100 split over them is not needed for one.
            RData::SRV(SRV::new(0, 100, *port, name(target)?))
        }
        Rec::Ptr(t) => RData::PTR(PTR(name(t)?)),
        Rec::Cname(t) => RData::CNAME(CNAME(name(t)?)),
        Rec::Txt(t) => RData::TXT(TXT::new(vec![t.clone()])),
    })
}

fn wanted(rec: &Rec, qtype: RecordType) -> bool {
    matches!(
        (rec, qtype),
        (_, RecordType::ANY)
            | (Rec::A(_), RecordType::A)
            | (Rec::Srv { .. }, RecordType::SRV)
            | (Rec::Ptr(_), RecordType::PTR)
            | (Rec::Cname(_), _)
            | (Rec::Txt(_), RecordType::TXT)
    )
}

/// Answers `req` from `idx` (`None` until the first lists are in: names of the domain then get
/// SERVFAIL rather than a wrong NXDOMAIN). `domain` is the cluster domain, absolute.
pub fn answer(idx: Option<&Index>, domain: &str, req: &Message, ttl: u32) -> Outcome {
    if req.message_type() != MessageType::Query || req.op_code() != OpCode::Query {
        return Outcome::Answer(reply(req, ResponseCode::NotImp));
    }
    let [q] = req.queries() else {
        return Outcome::Answer(reply(req, ResponseCode::FormErr));
    };
    let qname = absolute(&q.name().to_ascii());
    let ours = crate::index::under(&qname, domain);
    let reverse = qname.ends_with(".in-addr.arpa.");
    if !ours && !reverse {
        return Outcome::Forward;
    }
    let Some(idx) = idx else {
        return Outcome::Answer(reply(req, ResponseCode::ServFail));
    };
    if reverse && !idx.has_ptr(&qname) {
        return Outcome::Forward;
    }
    Outcome::Answer(from_index(idx, req, q, &qname, ttl))
}

fn from_index(idx: &Index, req: &Message, q: &Query, qname: &str, ttl: u32) -> Message {
    let Some(recs) = idx.lookup(qname) else {
        let mut m = reply(req, ResponseCode::NXDomain);
        m.set_authoritative(true);
        m.add_name_server(soa(idx, ttl).expect("the domain is a valid name"));
        return m;
    };
    let mut m = reply(req, ResponseCode::NoError);
    m.set_authoritative(true);
    let owner = q.name().clone();
    let mut any = false;
    for rec in recs.iter().filter(|r| wanted(r, q.query_type())) {
        if let Some(rdata) = to_rdata(rec) {
            m.add_answer(Record::from_rdata(owner.clone(), ttl, rdata));
            any = true;
        }
    }
    if !any {
        if let Some(s) = soa(idx, ttl) {
            m.add_name_server(s);
        }
    }
    // SRV targets' addresses ride along, as CoreDNS's kubernetes plugin does.
    if q.query_type() == RecordType::SRV {
        for rec in &recs {
            let Rec::Srv { target, .. } = rec else {
                continue;
            };
            for a in idx.lookup(target).unwrap_or_default() {
                if let (Rec::A(ip), Some(n)) = (a, name(target)) {
                    m.add_additional(Record::from_rdata(n, ttl, RData::A(A(ip))));
                }
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;

    fn query(n: &str, t: RecordType) -> Message {
        let mut m = Message::new();
        m.set_id(7)
            .add_query(Query::query(Name::from_ascii(n).unwrap(), t));
        m
    }

    fn idx() -> Index {
        let s: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubia", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}]}}))
        .unwrap();
        Index::build("cluster.local", &[&s], &[])
    }

    fn code(o: Outcome) -> (ResponseCode, usize, usize) {
        match o {
            Outcome::Answer(m) => (m.response_code(), m.answers().len(), m.name_servers().len()),
            Outcome::Forward => panic!("forwarded"),
        }
    }

    #[test]
    fn answers_nxdomain_nodata_servfail_and_forwards() {
        let i = idx();
        let d = "cluster.local.";
        let a = answer(
            Some(&i),
            d,
            &query("KUBIA.default.svc.cluster.local.", RecordType::A),
            5,
        );
        assert_eq!(code(a), (ResponseCode::NoError, 1, 0));
        let nodata = answer(
            Some(&i),
            d,
            &query("kubia.default.svc.cluster.local.", RecordType::TXT),
            5,
        );
        assert_eq!(
            code(nodata),
            (ResponseCode::NoError, 0, 1),
            "NODATA carries the SOA"
        );
        let nx = answer(
            Some(&i),
            d,
            &query("nope.default.svc.cluster.local.", RecordType::A),
            5,
        );
        assert_eq!(code(nx), (ResponseCode::NXDomain, 0, 1));
        let early = answer(
            None,
            d,
            &query("kubia.default.svc.cluster.local.", RecordType::A),
            5,
        );
        assert_eq!(code(early).0, ResponseCode::ServFail);
        assert!(matches!(
            answer(Some(&i), d, &query("example.com.", RecordType::A), 5),
            Outcome::Forward
        ));
        assert!(matches!(
            answer(
                Some(&i),
                d,
                &query("1.1.168.192.in-addr.arpa.", RecordType::PTR),
                5
            ),
            Outcome::Forward
        ));
        let ptr = answer(
            Some(&i),
            d,
            &query("20.0.96.10.in-addr.arpa.", RecordType::PTR),
            5,
        );
        assert_eq!(code(ptr), (ResponseCode::NoError, 1, 0));
        match answer(
            Some(&i),
            d,
            &query(
                "_http._tcp.kubia.default.svc.cluster.local.",
                RecordType::SRV,
            ),
            5,
        ) {
            Outcome::Answer(m) => assert_eq!((m.answers().len(), m.additionals().len()), (1, 1)),
            Outcome::Forward => panic!(),
        }
    }
}
