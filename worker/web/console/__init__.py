"""The operators' console: a read-mostly web view of the fleet, served by `ogv api`.

    GET  /console                      → /console/fleet
    GET  /console/fleet                teams by status, per platform and organization;
                                       status changes per day (30 days); the newest
    GET  /console/organization?id=N    its integrations, teams (status, last check, last
                                       error, what to do) and readiness for the sunset
    GET  /console/platforms            each base URL's health; the guard, what it holds
    POST /console/changes/release      `ogv changes release` for a base URL or a team
    POST /console/changes/discard      `ogv changes discard` for a base URL or a team
    GET  /console/sign-in, POST /console/sign-in, POST /console/sign-out
    GET  /console/console.css

The API's bearer middleware leaves these paths alone: the console signs in with a
token of the operate scope and keeps a signed cookie (auth.py, session.py). The
rooms:

    session.py   the signed session cookie and its CSRF token
    auth.py      who is signed in; the Origin and CSRF checks of every POST
    queries.py   what the pages read, each a function of a session, bounded
    markup.py    HTML that escapes every value; chart.py draws SVG charts
    pages.py     the pages, from views to HTML
    views.py     the handlers: thin, the database reached off the loop
    routes.py    the routes, added to the API's application (`add_console`)
"""
