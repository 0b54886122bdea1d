"""The patient portal at ``/portal``: server-rendered pages, no JavaScript needed.

``portal_router(data_dep)`` returns an ``APIRouter`` whose routes already carry
the ``/portal`` prefix; the app includes it as it is. ``data_dep`` is a FastAPI
dependency giving the :class:`~consent.portal.data.PortalData` of the request
(the exchange's store-backed one, or a fake in tests).

Every page but the login is for a logged-in person and shows only that
person's data: the person id comes from the server-side session, never from
the request. Every POST carries a CSRF token. Responses are not cached and may
not be framed. See ``docs/portal.md`` for the pages and the reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData

from consent import service
from consent.portal import views
from consent.portal.data import PortalData
from consent.portal.i18n import DEFAULT_LANG, HTML_LANG, LANGS, category_name, translator
from consent.portal.security import (
    LoginLimiter,
    PortalConfig,
    Session,
    SessionStore,
    new_token,
    tokens_match,
)
from consent.service import ConsentServiceError
from schemas.consent import TREAT, DecisionRequest
from schemas.sensitivity import CATEGORIES

PREFIX = "/portal"
SESSION_COOKIE = "portal_session"
LOGIN_CSRF_COOKIE = "portal_login_csrf"
LANG_COOKIE = "portal_lang"
#: Purposes a patient can grant: treatment (which also covers a consultant's
#: reads: consultation tokens carry TREAT) and emergency treatment.
GRANT_PURPOSES = ("TREAT", "ETREAT")
_HERE = Path(__file__).parent
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


class Halt(Exception):
    """Stop a request with this response (a redirect to the login, a refusal).

    Raised from dependencies; :class:`PortalRoute` turns it into the response,
    so the portal does not depend on the hosting app's exception handlers.
    """

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class PortalRoute(APIRoute):
    """Routes that answer :class:`Halt` and add the portal's security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                response = await handler(request)
            except Halt as halt:
                response = halt.response
            for key, value in _SECURITY_HEADERS.items():
                response.headers.setdefault(key, value)
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return run


def _lang(request: Request) -> str:
    lang = request.cookies.get(LANG_COOKIE, DEFAULT_LANG)
    return lang if lang in LANGS else DEFAULT_LANG


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _safe_next(value: str | None) -> str:
    """A redirect target inside the portal only (no open redirect)."""
    if value and value.startswith(PREFIX + "/") and "//" not in value and "\\" not in value:
        return value
    return PREFIX + "/records"


class Portal:
    """One portal: its sessions, limits and templates, and the route handlers."""

    def __init__(self, data_dep: Callable[..., Any], config: PortalConfig) -> None:
        self.config = config
        self.sessions = SessionStore(config)
        self.limiter = LoginLimiter(config)
        self.data_dep = data_dep
        self.env = Environment(loader=FileSystemLoader(_HERE / "templates"),
                               autoescape=select_autoescape(["html"]),
                               trim_blocks=True, lstrip_blocks=True)

    # -- plumbing -------------------------------------------------------------

    def secure(self, request: Request) -> bool:
        """Whether cookies get ``Secure``: configured, or when the public base
        URL (else the request) is https."""
        if self.config.secure_cookies is not None:
            return self.config.secure_cookies
        if self.config.base_url:
            return self.config.base_url.startswith("https://")
        return request.url.scheme == "https"

    def render(self, request: Request, template: str, *, session: Session | None,
               status: int = 200, **context: Any) -> HTMLResponse:
        lang = _lang(request)
        page = self.env.get_template(template).render(
            t=translator(lang), lang=lang, html_lang=HTML_LANG[lang], prefix=PREFIX,
            path=request.url.path, session=session, csrf=session.csrf if session else "",
            flash=_pop_flash(session), **context)
        return HTMLResponse(page, status_code=status)

    def session(self, request: Request) -> Session:
        """The logged-in session, or a redirect to the login page."""
        cookie = request.cookies.get(SESSION_COOKIE)
        session = self.sessions.get(cookie)
        if session is None:
            target = PREFIX + "/login" + ("?expired=1" if cookie else "")
            response = RedirectResponse(target, status_code=303)
            if cookie:
                response.delete_cookie(SESSION_COOKIE, path=PREFIX)
            raise Halt(response)
        return session

    async def form(self, request: Request, session: Session) -> FormData:
        """The POSTed form, once its CSRF token is checked (403 otherwise)."""
        form = await request.form()
        if not tokens_match(session.csrf, _field(form, "csrf")):
            raise Halt(self.render(request, "error.html", session=session, status=403,
                                   title_key="csrf.title", text_key="csrf.text"))
        return form

    async def names(self, data: PortalData) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
        names = await data.organization_names()
        doctors = {d["id"]: d for d in await data.practitioners()}
        return names, doctors

    # -- login ----------------------------------------------------------------

    def login_page(self, request: Request, *, status: int = 200, error: str | None = None,
                   username: str = "") -> HTMLResponse:
        token = request.cookies.get(LOGIN_CSRF_COOKIE) or new_token()
        notice = None
        if request.query_params.get("expired"):
            notice = "login.expired"
        elif request.query_params.get("bye"):
            notice = "logged_out"
        response = self.render(request, "login.html", session=None, status=status,
                               login_csrf=token, error=error, notice=notice, username=username)
        response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                            secure=self.secure(request), path=PREFIX)
        return response

    async def login(self, request: Request, data: PortalData) -> Response:
        form = await request.form()
        username = (_field(form, "username") or "").strip().lower()
        password = _field(form, "password") or ""
        if not tokens_match(request.cookies.get(LOGIN_CSRF_COOKIE), _field(form, "csrf")):
            return self.render(request, "error.html", session=None, status=403,
                               title_key="csrf.title", text_key="csrf.text")
        keys = ("addr:" + _client(request),) + (("user:" + username,) if username else ())
        wait = self.limiter.retry_after(*keys)
        if wait is not None:
            minutes = max(1, (wait + 59) // 60)
            response = self.login_page(request, status=429, username=username,
                                       error=translator(_lang(request))("login.locked",
                                                                        minutes=minutes))
            response.headers["Retry-After"] = str(wait)
            return response
        person = await data.authenticate(username, password) if username and password else None
        if person is None:
            self.limiter.failed(*keys)
            return self.login_page(request, status=401, username=username,
                                   error=translator(_lang(request))("login.failed"))
        self.limiter.clear("user:" + username)
        self.sessions.end(request.cookies.get(SESSION_COOKIE))  # no fixation: always new
        session = self.sessions.create(person)
        response = RedirectResponse(PREFIX + "/records", status_code=303)
        response.set_cookie(SESSION_COOKIE, session.id, httponly=True, samesite="lax",
                            secure=self.secure(request), path=PREFIX)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path=PREFIX)
        return response


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _pop_flash(session: Session | None) -> list[tuple[str, str]]:
    if session is None:
        return []
    flash, session.flash = session.flash, []
    return flash


def _parse_date(value: str | None) -> date | None:
    value = (value or "").strip()
    return date.fromisoformat(value) if value else None


def portal_router(data_dep: Callable[..., Any], config: PortalConfig | None = None
                  ) -> APIRouter:
    """The portal's routes under ``/portal``, over the ``PortalData`` ``data_dep`` gives."""
    portal = Portal(data_dep, config or PortalConfig())
    router = APIRouter(prefix=PREFIX, route_class=PortalRoute, include_in_schema=False)
    Data = Depends(data_dep)
    Live = Depends(portal.session)

    @router.get("")
    @router.get("/")
    async def home(request: Request) -> Response:
        logged_in = portal.sessions.get(request.cookies.get(SESSION_COOKIE)) is not None
        return RedirectResponse(PREFIX + ("/records" if logged_in else "/login"), 303)

    @router.get("/static/portal.css")
    async def stylesheet() -> Response:
        response = FileResponse(_HERE / "static" / "portal.css", media_type="text/css")
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    @router.get("/lang/{lang}")
    async def switch_language(request: Request, lang: str) -> Response:
        """Choose the language (a cookie); plain links, so it works without scripts."""
        response = RedirectResponse(_safe_next(request.query_params.get("next")), 303)
        if lang in LANGS:
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax",
                                secure=portal.secure(request), path=PREFIX)
        return response

    @router.get("/login")
    async def login_form(request: Request) -> Response:
        return portal.login_page(request)

    @router.post("/login")
    async def login(request: Request, data: PortalData = Data) -> Response:
        return await portal.login(request, data)

    @router.post("/logout")
    async def logout(request: Request, session: Session = Live) -> Response:
        await portal.form(request, session)
        portal.sessions.end(session.id)
        response = RedirectResponse(PREFIX + "/login?bye=1", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    @router.get("/records")
    async def records(request: Request, session: Session = Live,
                      data: PortalData = Data) -> Response:
        names = await data.organization_names()
        groups = views.group_records(await data.records(session.person), names,
                                     _lang(request))
        return portal.render(request, "records.html", session=session, groups=groups,
                             person_name=await data.person_name(session.person))

    async def consents_page(request: Request, session: Session, data: PortalData, *,
                            status: int = 200, errors: list[str] | None = None,
                            values: dict[str, Any] | None = None) -> HTMLResponse:
        lang = _lang(request)
        names, doctors = await portal.names(data)
        consents = await service.list_consents(data.consent_data(), person=session.person)
        rows = [views.consent_row(c, names, doctors, lang) for c in consents]
        rows.sort(key=lambda r: not r.active)  # active first, newest first within
        directory = sorted(doctors.values(), key=lambda d: (names.get(d["organization"], ""),
                                                            d["name"]))
        return portal.render(
            request, "consents.html", session=session, status=status, rows=rows,
            hospitals=sorted(names.items(), key=lambda kv: kv[1]), doctors=directory,
            names=names, purposes=GRANT_PURPOSES,
            categories=[(c.code, category_name(c.code, lang)) for c in CATEGORIES],
            errors=errors or [], values=values or {"purpose": ["TREAT"]})

    @router.get("/consents")
    async def consents(request: Request, session: Session = Live,
                       data: PortalData = Data) -> Response:
        return await consents_page(request, session, data)

    @router.post("/consents")
    async def grant(request: Request, session: Session = Live,
                    data: PortalData = Data) -> Response:
        form = await portal.form(request, session)
        t = translator(_lang(request))
        names, doctors = await portal.names(data)
        grantee = _field(form, "grantee") or ""
        purposes = [p for p in form.getlist("purpose") if p in GRANT_PURPOSES]
        labels = [c.code for c in CATEGORIES if c.code in form.getlist("category")]
        values = {"grantee": grantee, "purpose": purposes, "category": labels,
                  "start": _field(form, "start") or "", "end": _field(form, "end") or ""}
        errors: list[str] = []
        kind, _, target = grantee.partition(":")
        organization = target if kind == "org" and target in names else None
        practitioner = target if kind == "doc" and target in doctors else None
        if organization is None and practitioner is None:
            errors.append(t("grant.error.grantee"))
        if not purposes:
            errors.append(t("grant.error.purpose"))
        start = end = None
        try:
            start, end = _parse_date(values["start"]), _parse_date(values["end"])
        except ValueError:
            errors.append(t("grant.error.date"))
        if start and end and end < start:
            errors.append(t("grant.error.period"))
        if not errors:
            grantee_name = (names[organization] if organization
                            else doctors[practitioner]["name"] if practitioner else None)
            try:
                # dates, not datetimes: a date bound covers its whole local day
                await service.grant_consent(
                    data.consent_data(), person=session.person, organization=organization,
                    practitioner=practitioner, purposes=purposes, open_labels=labels,
                    start=start, end=end, grantee_name=grantee_name)  # type: ignore[arg-type]
            except ConsentServiceError as exc:
                errors.append(t("grant.error.failed", detail=str(exc)))
        if errors:
            return await consents_page(request, session, data, status=400, errors=errors,
                                       values=values)
        session.flash.append(("ok", "grant.done"))
        return RedirectResponse(PREFIX + "/consents", status_code=303)

    async def find_consent(session: Session, data: PortalData, consent_id: str
                           ) -> dict[str, Any] | None:
        found = await service.list_consents(data.consent_data(), person=session.person)
        return next((c for c in found if c.get("id") == consent_id), None)

    @router.get("/consents/{consent_id}/withdraw")
    async def confirm_withdraw(request: Request, consent_id: str, session: Session = Live,
                               data: PortalData = Data) -> Response:
        consent = await find_consent(session, data, consent_id)
        if consent is None or consent.get("status") != "active":
            session.flash.append(("error", "withdraw.missing"))
            return RedirectResponse(PREFIX + "/consents", status_code=303)
        names, doctors = await portal.names(data)
        row = views.consent_row(consent, names, doctors, _lang(request))
        return portal.render(request, "withdraw.html", session=session, row=row)

    @router.post("/consents/{consent_id}/withdraw")
    async def withdraw(request: Request, consent_id: str, session: Session = Live,
                       data: PortalData = Data) -> Response:
        await portal.form(request, session)
        try:
            await service.withdraw_consent(data.consent_data(), person=session.person,
                                           consent_id=consent_id)
            session.flash.append(("ok", "withdraw.done"))
        except ConsentServiceError:
            session.flash.append(("error", "withdraw.missing"))
        return RedirectResponse(PREFIX + "/consents", status_code=303)

    @router.get("/consultations")
    async def consultations(request: Request, session: Session = Live,
                            data: PortalData = Data) -> Response:
        names, doctors = await portal.names(data)
        found = await service.list_consultations(data.consent_data(), person=session.person)
        rows = [views.consultation_row(c, names, doctors, _lang(request)) for c in found]
        return portal.render(request, "consultations.html", session=session, rows=rows)

    async def answer(request: Request, session: Session, data: PortalData, id: str,
                     approve: bool) -> Response:
        await portal.form(request, session)
        act = service.approve_consultation if approve else service.decline_consultation
        try:
            await act(data.consent_data(), person=session.person, id=id)
            session.flash.append(("ok", "consult.approved" if approve else "consult.declined"))
        except ConsentServiceError:
            session.flash.append(("error", "consult.failed"))
        return RedirectResponse(PREFIX + "/consultations", status_code=303)

    @router.post("/consultations/{id}/approve")
    async def approve(request: Request, id: str, session: Session = Live,
                      data: PortalData = Data) -> Response:
        return await answer(request, session, data, id, True)

    @router.post("/consultations/{id}/decline")
    async def decline(request: Request, id: str, session: Session = Live,
                      data: PortalData = Data) -> Response:
        return await answer(request, session, data, id, False)

    @router.get("/access")
    async def access(request: Request, session: Session = Live,
                     data: PortalData = Data) -> Response:
        cursor = request.query_params.get("cursor") or None
        entries, next_cursor = await data.access_log(session.person,
                                                     limit=portal.config.page_size,
                                                     cursor=cursor)
        names, doctors = await portal.names(data)
        return portal.render(request, "access.html", session=session, entries=entries,
                             next_cursor=next_cursor, paged=cursor is not None, names=names,
                             doctors=doctors, local_time=views.local_time,
                             access_what=views.access_what)

    @router.get("/preview")
    async def preview(request: Request, session: Session = Live,
                      data: PortalData = Data) -> Response:
        """Who can see what: the decision for each hospital (purpose TREAT), and
        for each doctor an active consent names."""
        lang = _lang(request)
        names, doctors = await portal.names(data)
        cdata = data.consent_data()
        now, orgs = datetime.now(UTC), sorted(names)

        async def decide(org: str, practitioner: str | None = None) -> Any:
            request_ = DecisionRequest(organization=org, practitioner=practitioner,
                                       purpose=TREAT, person=session.person)
            return await service.decide(cdata, request_, now=now, organizations=orgs,
                                        break_glass_hours=portal.config.break_glass_hours)

        hospitals = [views.preview_row(names[o], o, await decide(o), names, lang)
                     for o in sorted(orgs, key=lambda o: names[o])]
        named = {ref.split("/", 1)[1] for c in await service.list_consents(
            cdata, person=session.person) if c.get("status") == "active"
            for ref in _actor_refs(c) if ref.startswith("Practitioner/")}
        doctor_rows = []
        for pid in sorted(p for p in named if p in doctors):
            doc = doctors[pid]
            label = translator(lang)("preview.doctor", name=doc["name"],
                                     hospital=names.get(doc["organization"], ""))
            decision = await decide(doc["organization"], pid)
            doctor_rows.append(views.preview_row(label, doc["organization"], decision,
                                                 names, lang))
        return portal.render(request, "preview.html", session=session, hospitals=hospitals,
                             doctors=doctor_rows)

    @router.get("/export")
    async def export(session: Session = Live, data: PortalData = Data) -> Response:
        """All my data as a FHIR Bundle, downloaded as a file."""
        bundle = await data.export_bundle(session.person)
        day = datetime.now(UTC).date().isoformat()
        return Response(orjson.dumps(bundle, option=orjson.OPT_INDENT_2),
                        media_type="application/fhir+json", headers={
                            "Content-Disposition": f'attachment; filename="my-health-record-'
                                                   f'{day}.json"'})

    return router


def _actor_refs(consent: dict[str, Any]) -> list[str]:
    provision = consent.get("provision") or {}
    return [(a.get("reference") or {}).get("reference") or ""
            for a in provision.get("actor") or [] if isinstance(a, dict)]
