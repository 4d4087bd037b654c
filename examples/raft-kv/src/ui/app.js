// The raft-kv dashboard: polls this node's /ui/cluster (every member's /status, gathered by the
// node) and draws the cluster. No framework, no external resource; data from the nodes is only
// ever set as text (never parsed as HTML).
"use strict";

(() => {
  const POLL_MS = 1000;
  const POLL_TIMEOUT_MS = 5000;
  const ACTION_TIMEOUT_MS = 40000;
  const MAX_EVENTS = 50;
  const EVENTS_KEY = "raft-kv-ui/events";
  const LAST_KEY = "raft-kv-ui/last";
  const TOKEN_KEY = "raft-kv-ui/token";
  const ROLES = ["leader", "follower", "candidate", "learner", "unreachable"];

  const $ = (id) => document.getElementById(id);
  const cards = new Map();
  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let events = load(EVENTS_KEY, []);
  let last = load(LAST_KEY, null);
  let renderedEvents = -1;
  let busy = false;
  let pollTimer = null;

  function load(key, fallback) {
    try {
      const value = JSON.parse(localStorage.getItem(key));
      return value === null || value === undefined ? fallback : value;
    } catch (_) {
      return fallback;
    }
  }

  function save(key, value) {
    try {
      localStorage.setItem(key, JSON.stringify(value));
    } catch (_) {
      // Storage full or disabled: the timeline then lives as long as the page.
    }
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function show(value) {
    return value === null || value === undefined ? "-" : String(value);
  }

  async function request(method, path, body) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), method === "GET" ? POLL_TIMEOUT_MS : ACTION_TIMEOUT_MS);
    const headers = {};
    if (token) headers.Authorization = "Bearer " + token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET") headers["X-Raft-Kv-Ui"] = "1";
    try {
      const response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: controller.signal,
        cache: "no-store",
      });
      let data = null;
      try {
        data = await response.json();
      } catch (_) {
        data = null;
      }
      return { status: response.status, ok: response.ok, data };
    } finally {
      clearTimeout(timer);
    }
  }

  // ---- what the view says -------------------------------------------------------------------

  function roleOf(member) {
    if (!member.status) return "unreachable";
    const role = member.status.role;
    if (member.learner && role === "follower") return "learner";
    if (role === "pre-candidate") return "candidate";
    return ROLES.includes(role) ? role : "follower";
  }

  function roleText(member) {
    if (!member.status) return "unreachable";
    if (member.learner && member.status.role === "follower") return "learner";
    return member.status.role;
  }

  // The leader to believe: among the members that answered and say they lead, the highest term.
  function leaderOf(view) {
    let best = null;
    for (const m of view.members) {
      if (m.status && m.status.role === "leader" && (!best || m.status.term > best.status.term)) best = m;
    }
    return best;
  }

  function maxTerm(view) {
    let term = null;
    for (const m of view.members) {
      if (m.status && (term === null || m.status.term > term)) term = m.status.term;
    }
    return term;
  }

  function lagOf(view, leader, id) {
    if (!leader) return null;
    if (leader.id === id) return 0;
    const lag = leader.status.lag || {};
    return Object.prototype.hasOwnProperty.call(lag, String(id)) ? lag[String(id)] : null;
  }

  function summarize(view) {
    const leader = leaderOf(view);
    const members = {};
    for (const m of view.members) {
      members[m.id] = { up: !!m.status, role: roleOf(m), term: m.status ? m.status.term : null };
    }
    return {
      leader: leader ? leader.id : null,
      knownLeader: leader ? leader.id : last ? last.knownLeader : null,
      term: leader ? leader.status.term : maxTerm(view),
      voters: view.voters,
      learners: view.learners,
      joint: view.joint,
      members,
    };
  }

  // What changed between two successive summaries, as timeline events [kind, text].
  function changes(prev, cur) {
    const out = [];
    const count = Object.keys(cur.members).length;
    if (!prev) {
      out.push(["info", `Watching ${count} members; leader: ${cur.leader === null ? "none" : "node " + cur.leader}, term ${show(cur.term)}`]);
      return out;
    }
    for (const id of Object.keys(cur.members)) {
      const a = prev.members[id];
      const b = cur.members[id];
      if (!a) {
        out.push(["membership", `Node ${id} joined as a ${cur.learners.includes(Number(id)) ? "learner" : "voter"}`]);
      } else if (a.up && !b.up) {
        out.push(["down", `Node ${id} unreachable (was ${a.role})`]);
      } else if (!a.up && b.up) {
        out.push(["up", `Node ${id} is back (${b.role}, term ${show(b.term)})`]);
      } else if (b.up && b.role === "candidate" && a.role !== "candidate") {
        out.push(["election", `Node ${id} campaigns (term ${show(b.term)})`]);
      }
    }
    for (const id of Object.keys(prev.members)) {
      if (!cur.members[id]) out.push(["membership", `Node ${id} left the membership`]);
    }
    for (const id of cur.voters) {
      if (prev.learners.includes(id)) out.push(["membership", `Node ${id} promoted to voter`]);
    }
    for (const id of cur.learners) {
      if (prev.voters.includes(id)) out.push(["membership", `Node ${id} demoted to learner`]);
    }
    if (cur.joint !== prev.joint) {
      out.push(["membership", cur.joint ? "Voters changing (joint configuration)" : `Voters settled: ${cur.voters.join(", ")}`]);
    }
    if (cur.term !== null && prev.term !== null && cur.term > prev.term) {
      out.push(["election", `Term ${prev.term} \u2192 ${cur.term}`]);
    }
    if (cur.leader !== prev.leader) {
      if (cur.leader === null) {
        out.push(["down", `No leader (node ${prev.leader} led)`]);
      } else if (prev.knownLeader !== null && prev.knownLeader !== cur.leader) {
        out.push(["leader", `Node ${cur.leader} leads, term ${show(cur.term)} (was node ${prev.knownLeader})`]);
      } else {
        out.push(["leader", `Node ${cur.leader} leads, term ${show(cur.term)}`]);
      }
    }
    return out;
  }

  function record(view) {
    const cur = summarize(view);
    const now = Date.now();
    for (const [kind, text] of changes(last, cur)) events.push({ t: now, kind, text });
    if (events.length > MAX_EVENTS) events = events.slice(events.length - MAX_EVENTS);
    last = cur;
    save(LAST_KEY, last);
    save(EVENTS_KEY, events);
  }

  // ---- drawing --------------------------------------------------------------------------------

  function stat(label, wide) {
    const box = el("div", wide ? "stat wide" : "stat");
    box.append(el("span", "", label));
    const value = el("b", "", "-");
    box.append(value);
    return { box, value };
  }

  function makeCard(id) {
    const root = el("article", "node");
    root.dataset.nodeId = String(id);
    const head = el("div", "node-head");
    const title = el("div", "node-title");
    const crown = el("span", "crown", "\u2605");
    const name = el("span", "", `Node ${id}`);
    title.append(crown, name);
    const role = el("span", "role", "-");
    head.append(title, role);
    const addrLine = el("div", "node-addr");
    const addr = el("span", "", "");
    const kind = el("span", "", "");
    addrLine.append(addr, kind);
    const stats = el("div", "stats");
    const fields = {};
    for (const [key, label, wide] of [
      ["term", "term"], ["leader", "leader"], ["commit", "commit"], ["applied", "applied"],
      ["last", "last log"], ["entries", "log size"], ["snapshot", "snapshot"], ["lag", "lag"],
    ]) {
      const s = stat(label, wide);
      fields[key] = s.value;
      stats.append(s.box);
    }
    const progress = el("div", "progress");
    const bar = el("i");
    progress.append(bar);
    const error = el("div", "node-error", "");
    const actions = el("div", "node-actions");
    const lead = el("button", "", "Make leader");
    lead.type = "button";
    lead.addEventListener("click", () => act(`Transfer leadership to node ${id}`, "/ui/admin/transfer-leader", { to: id }));
    const promote = el("button", "", "Promote");
    promote.type = "button";
    promote.addEventListener("click", () => act(`Promote node ${id}`, "/ui/admin/members", { promote: id }));
    const remove = el("button", "danger", "Remove");
    remove.type = "button";
    remove.addEventListener("click", () => {
      if (window.confirm(`Remove node ${id} from the cluster?`)) act(`Remove node ${id}`, "/ui/admin/members", { remove: id });
    });
    actions.append(lead, promote, remove);
    root.append(head, addrLine, stats, progress, error, actions);
    return { root, crown, role, addr, kind, fields, bar, error, lead, promote, remove };
  }

  function drawCard(card, member, view, leader, top) {
    const role = roleOf(member);
    card.root.dataset.role = role;
    card.root.dataset.voter = String(member.voter);
    card.crown.hidden = role !== "leader";
    card.role.textContent = roleText(member);
    card.addr.textContent = member.http_addr || "no HTTP address recorded";
    const outgoing = view.old_voters && view.old_voters.includes(member.id) && !view.voters.includes(member.id);
    card.kind.textContent = `${member.learner ? "learner" : outgoing ? "outgoing voter" : "voter"} \u00b7 ${member.elapsed_ms} ms`;
    const s = member.status;
    const f = card.fields;
    f.term.textContent = show(s && s.term);
    f.leader.textContent = s ? (s.leader === null ? "none" : String(s.leader)) : "-";
    f.commit.textContent = show(s && s.commit_index);
    f.applied.textContent = show(s && s.last_applied);
    f.last.textContent = show(s && s.last_log_index);
    f.entries.textContent = show(s && s.log_entries);
    f.snapshot.textContent = show(s && s.snapshot_index);
    const lag = lagOf(view, leader, member.id);
    f.lag.textContent = show(lag);
    f.lag.classList.toggle("bad", lag !== null && lag > 0);
    const applied = s ? s.last_applied : 0;
    card.bar.style.width = top > 0 ? `${Math.min(100, (100 * applied) / top)}%` : s ? "100%" : "0%";
    let error = "";
    if (!s) error = member.error || "no answer";
    else if (s.status !== "running") error = s.status;
    card.error.textContent = error;
    card.lead.hidden = !member.voter || member.learner || role === "leader";
    card.lead.disabled = busy || !s || !leader;
    card.promote.hidden = !member.learner;
    card.promote.disabled = busy;
    card.remove.disabled = busy;
  }

  function chip(id, className) {
    return el("span", "chip " + className, String(id));
  }

  function drawMembership(view, leader) {
    const down = new Set(view.members.filter((m) => !m.status).map((m) => m.id));
    const cls = (id) => (leader && leader.id === id ? "leader" : down.has(id) ? "down" : "");
    const voters = $("voters");
    voters.replaceChildren(...view.voters.map((id) => chip(id, cls(id))));
    const outgoing = (view.old_voters || []).filter((id) => !view.voters.includes(id));
    voters.append(...outgoing.map((id) => chip(id, cls(id) + " outgoing")));
    if (!view.voters.length) voters.append(el("span", "none", "none"));
    const learners = $("learners");
    learners.replaceChildren(...view.learners.map((id) => chip(id, cls(id))));
    if (!view.learners.length) learners.append(el("span", "none", "none"));
    const joint = $("joint");
    joint.classList.toggle("on", view.joint);
    joint.textContent = view.joint
      ? `joint: changing from ${(view.old_voters || []).join(", ")} to ${view.voters.join(", ")}`
      : `stable (${view.voters.length} voters, majority ${Math.floor(view.voters.length / 2) + 1})`;
  }

  function time(t) {
    const d = new Date(t);
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
  }

  function drawTimeline() {
    if (renderedEvents === events.length && events.length !== MAX_EVENTS) return;
    renderedEvents = events.length;
    const list = $("timeline");
    const items = events.slice().reverse().map((e) => {
      const li = el("li", e.kind);
      const when = el("time", "", time(e.t));
      when.dateTime = new Date(e.t).toISOString();
      li.append(when, el("span", "dot"), el("span", "", e.text));
      return li;
    });
    if (!items.length) items.push(el("li", "empty", "Nothing yet: changes between polls appear here."));
    list.replaceChildren(...items);
  }

  function render(view) {
    record(view);
    const leader = leaderOf(view);
    const top = Math.max(0, ...view.members.filter((m) => m.status).map((m) => m.status.last_log_index));
    const seen = new Set();
    const container = $("nodes");
    for (const member of view.members) {
      seen.add(member.id);
      let card = cards.get(member.id);
      if (!card) {
        card = makeCard(member.id);
        cards.set(member.id, card);
      }
      drawCard(card, member, view, leader, top);
      container.append(card.root); // keeps the cards in id order
    }
    for (const [id, card] of cards) {
      if (!seen.has(id)) {
        card.root.remove();
        cards.delete(id);
      }
    }
    $("via").textContent = String(view.via);
    $("leader").textContent = leader ? String(leader.id) : "";
    document.body.classList.toggle("has-leader", !!leader);
    document.body.classList.add("rendered");
    $("no-leader").textContent = "none";
    const term = leader ? leader.status.term : maxTerm(view);
    $("term").textContent = show(term);
    $("node-count").textContent = String(view.members.length);
    $("up-count").textContent = String(view.members.filter((m) => m.status).length);
    $("transfer-any").disabled = busy || !leader;
    drawMembership(view, leader);
    drawTimeline();
  }

  function banner(text) {
    const b = $("banner");
    b.hidden = !text;
    b.textContent = text || "";
  }

  function pollState(ok, text) {
    const pulse = $("pulse");
    pulse.className = "pulse";
    void pulse.offsetWidth; // restarts the beat animation
    pulse.className = ok ? "pulse ok" : "pulse err";
    $("poll-status").textContent = text;
    document.body.dataset.state = ok ? "live" : "error";
  }

  async function poll() {
    clearTimeout(pollTimer);
    try {
      const r = await request("GET", "/ui/cluster");
      if (r.status === 401) {
        banner("This node requires its API token: enter it above (it is kept in this tab only).");
        pollState(false, "token needed");
      } else if (!r.ok || !r.data || !Array.isArray(r.data.members)) {
        const why = r.data && r.data.message ? `: ${r.data.message}` : "";
        banner(`/ui/cluster answered ${r.status}${why}`);
        pollState(false, `error ${r.status}`);
      } else {
        banner("");
        render(r.data);
        pollState(true, `updated ${time(Date.now())}`);
      }
    } catch (e) {
      banner(`The node serving this page does not answer (${e.name === "AbortError" ? "timeout" : e.message}). Open another node's /ui.`);
      pollState(false, "node unreachable");
    } finally {
      pollTimer = setTimeout(poll, POLL_MS);
    }
  }

  // ---- admin actions --------------------------------------------------------------------------

  function result(kind, text) {
    const r = $("action-result");
    r.className = "action-result " + kind;
    r.textContent = text;
  }

  async function act(label, path, body) {
    if (busy) return;
    busy = true;
    result("", `${label}...`);
    try {
      const r = await request("POST", path, body);
      if (r.ok) {
        const leader = r.data && r.data.leader !== undefined && r.data.leader !== null ? ` (leader: node ${r.data.leader})` : "";
        result("ok", `${label}: done${leader}`);
      } else if (r.status === 401) {
        result("err", `${label}: refused, the API token is missing or wrong (enter it above)`);
      } else {
        const code = r.data && r.data.error ? r.data.error : "error";
        const message = r.data && r.data.message ? r.data.message : "";
        result("err", `${label} failed: ${r.status} ${code}${message ? ": " + message : ""}`);
      }
    } catch (e) {
      result("err", `${label} failed: ${e.name === "AbortError" ? "no answer in time" : e.message}`);
    } finally {
      busy = false;
      poll();
    }
  }

  function init() {
    $("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      token = $("token").value.trim();
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
      poll();
    });
    if (token) $("token").value = token;
    $("transfer-any").addEventListener("click", () => act("Transfer leadership", "/ui/admin/transfer-leader", undefined));
    $("add-learner").addEventListener("submit", (e) => {
      e.preventDefault();
      const form = e.target;
      const id = Number(form.elements.id.value);
      const body = { add_learner: { id, raft_addr: form.elements.raft_addr.value.trim(), http_addr: form.elements.http_addr.value.trim() } };
      act(`Add learner ${id}`, "/ui/admin/members", body);
    });
    $("clear-events").addEventListener("click", () => {
      events = [];
      save(EVENTS_KEY, events);
      renderedEvents = -1;
      drawTimeline();
    });
    drawTimeline();
    poll();
  }

  init();
})();
