"""The web dashboard at /dashboard: server-rendered pages (Jinja2), one stylesheet and one small script, live
provisioning timelines and job logs by server-sent events. A client of the API, called in-process through the
same routing, policy and validation as any other client; it opens no database session of its own."""
