"""The folded ledger state as JSON and as lines of text (`rollproof ledger fold`). Pure."""

from __future__ import annotations

from typing import Any

from rollproof.governance.records import LedgerState


def state_json(state: LedgerState) -> dict[str, Any]:
    return {
        "through": state.through,
        "head": state.head,
        "validator_pin": state.validator_pin,
        "tickets": [
            {
                "id": t.id,
                "state": str(t.state),
                "title": t.title,
                "change_id": t.change_id,
                "opened_at": t.opened_at,
                "closed_at": t.closed_at,
            }
            for t in state.tickets.values()
        ],
        "blockers": [
            {
                "id": b.id,
                "state": str(b.state),
                "title": b.title,
                "change_id": b.change_id,
                "ticket_id": b.ticket_id,
                "check": b.check,
                "conditions": [
                    {"id": c.id, "text": c.text, "evidence": c.evidence} for c in b.conditions
                ],
            }
            for b in state.blockers.values()
        ],
        "rehearsals": [
            {
                "seq": r.seq,
                "change_id": r.change_id,
                "lane": r.lane,
                "overall": str(r.overall),
                "packet_tree_hash": r.packet_tree_hash,
                "grant_id": r.grant_id,
            }
            for r in sorted(state.rehearsals.values(), key=lambda r: r.seq)
        ],
        "consumed_grants": [
            {
                "seq": g.seq,
                "grant_id": g.grant_id,
                "lane": g.lane,
                "change_id": g.change_id,
                "expires": g.expires,
            }
            for g in sorted(state.consumed_grants.values(), key=lambda g: g.seq)
        ],
        "refusals": [
            {"seq": r.seq, "reason": r.reason, "lane": r.lane, "change_id": r.change_id}
            for r in state.refusals
        ]
        + [
            {"seq": r.seq, "reason": r.reason, "lane": r.lane, "change_id": r.change_id}
            for r in state.lane_refusals
        ],
        "decisions": [
            {
                "seq": d.seq,
                "change_id": d.change_id,
                "decision": str(d.decision),
                "lane": d.lane,
                "operator": d.operator,
            }
            for d in state.decisions
        ],
        "holds": {
            change: {"held": h.held, "seq": h.seq, "grant_id": h.grant_id}
            for change, h in sorted(state.holds.items())
        },
    }


def state_lines(state: LedgerState) -> list[str]:
    doc = state_json(state)
    lines = [
        f"folded through event {doc['through']} (head {doc['head']})",
        f"validator pin: {doc['validator_pin'] or 'none'}",
    ]
    lines += [f"ticket {t['id']} {t['state']}: {t['title']}" for t in doc["tickets"]]
    for b in doc["blockers"]:
        conditions = ", ".join(
            f"{c['id']} {'discharged' if c['evidence'] else 'OPEN'}" for c in b["conditions"]
        )
        lines.append(f"blocker {b['id']} {b['state']}: {b['title']} [{conditions}]")
    lines += [
        f"rehearsal at {r['seq']}: {r['change_id']} {r['overall']} (lane {r['lane']}, "
        f"tree {r['packet_tree_hash']})"
        for r in doc["rehearsals"]
    ]
    lines += [
        f"grant consumed at {g['seq']}: {g['grant_id']} (lane {g['lane']}, {g['change_id']})"
        for g in doc["consumed_grants"]
    ]
    lines += [
        f"refused at {r['seq']}: {r['reason']} (lane {r['lane']}, {r['change_id']})"
        for r in sorted(doc["refusals"], key=lambda r: r["seq"])
    ]
    lines += [
        f"decision at {d['seq']}: {d['change_id']} {d['decision']}"
        + (f" {d['lane']}" if d["lane"] else "")
        for d in doc["decisions"]
    ]
    lines += [
        f"{change}: {'HOLD' if h['held'] else 'HOLD lifted by grant ' + str(h['grant_id'])}"
        for change, h in doc["holds"].items()
    ]
    return lines
