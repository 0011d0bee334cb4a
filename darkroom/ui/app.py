"""The darkroom web page, served by `darkroom ui` (`streamlit run darkroom/ui/app.py`).

A thin page script: the sidebar connects to the API, each tab is drawn by its
own module. Streamlit runs this file top to bottom on every interaction.
"""

from __future__ import annotations

import streamlit as st

from darkroom.ui import generate, history, session, sidebar, system

st.set_page_config(page_title="darkroom", page_icon="🎞️", layout="wide")
connected = sidebar.render()
if connected is None:
    st.stop()
# Tracked tabs (on_change="rerun"): "Run again" in History can move the page to Generate.
generate_tab, history_tab, system_tab = st.tabs(session.TABS, key=session.TAB, on_change="rerun")
with generate_tab:
    generate.render(connected)
with history_tab:
    history.render(connected.api)
with system_tab:
    system.render(connected.api)
